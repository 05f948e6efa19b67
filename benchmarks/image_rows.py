"""Stack sample grids into one labelled figure (docs/images/distillation_one_step.png).

    python benchmarks/image_rows.py --out docs/images/distillation_one_step.png \\
        --title "One network evaluation per sample" "teacher (VP), 1 step=runs/a/grid.png" "progressive=runs/b/grid.png"

Each ``LABEL=PATH`` is a grid PNG written by ``gentool sample``; they are drawn one
under another, in the order given, with the label on the left.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="LABEL=PATH of a grid image")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rows = []
    for row in args.rows:
        label, sep, path = row.partition("=")
        if not sep:
            parser.error(f"{row!r} is not LABEL=PATH")
        rows.append((label, Image.open(path).convert("RGB")))
    width = max(image.width for _, image in rows)
    heights = [image.height for _, image in rows]
    scale = 9.0 / width
    fig, axes = plt.subplots(len(rows), 1, figsize=(9.0 + 2.4, sum(heights) * scale + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (label, image) in zip(axes[:, 0], rows):
        ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if args.title:
        fig.suptitle(args.title, fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
