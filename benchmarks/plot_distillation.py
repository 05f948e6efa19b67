"""Draw docs/images/distillation_fid_vs_nfe.png from the distillation reports.

    python benchmarks/plot_distillation.py [--results benchmarks/results/quality-cpu-2026-12-07/distill]
                                           [--out docs/images/distillation_fid_vs_nfe.png]

One panel per teacher (VP, EDM, flow matching): FID against network evaluations for
the students (one line per distillation, the mean of its two sampling seeds) and the
teacher's training-free solvers. A guided step counts two evaluations (the
conditional and the unconditional prediction), an unguided one one. The reports are
`gentool eval` outputs: a grid's ``grid.json`` (cells) or a single evaluation's JSON
(``sampler``), named as benchmarks/results/quality-cpu-2026-12-07/distill/README.md says.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "quality-cpu-2026-12-07" / "distill"
OUT = HERE.parent / "docs" / "images" / "distillation_fid_vs_nfe.png"

# a panel: its title, the prefix of its teacher's reports (every solver and step count), and its students as
# (label, prefix of the first distillation's reports); the second distillation's are the prefix with
# "_steps" replaced by "_train1_steps"
PANELS = [
    ("VP teacher (fashion_mnist_cfg)", "teacher_", [("progressive", "progressive_steps")]),
    ("EDM teacher (fashion_mnist_edm_cfg)", "edm_teacher_",
     [("consistency distillation", "consistency_steps"), ("ECT (guided)", "ect_steps")]),
    ("flow-matching teacher (fashion_mnist_flow_cfg)", "flow_teacher_", [("reflow", "reflow_steps")]),
]


def points(path: Path) -> list[tuple[str, int, float, float]]:
    """(sampler, network evaluations, FID, class accuracy) of every cell of one report."""
    report = json.loads(path.read_text())
    rows = []
    if "cells" in report:
        for cell in report["cells"]:
            c = cell["cell"]
            per_step = 2 if c["kind"] == "cfg" and c["w"] else 1
            rows.append((c["sampler"], c["steps"] * per_step, cell["metrics"]["fid"],
                         cell["metrics"].get("class_acc", float("nan"))))
    else:
        s = report["sampler"]
        per_step = 2 if s.get("guidance") else 1
        rows.append((s["name"], s["steps"] * per_step, report["metrics"]["fid"],
                     report["metrics"].get("class_acc", float("nan"))))
    return rows


def series(results: Path, prefix: str) -> dict[str, dict[int, list[float]]]:
    """sampler -> evaluations -> the FIDs of every sampling seed, over the files ``prefix*_seed*.json``."""
    out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(results.glob(f"{prefix}*_seed*.json")):
        for sampler, nfe, fid, _ in points(path):
            out[sampler][nfe].append(fid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.2 * len(PANELS), 4.2), sharey=True)
    for ax, (title, teacher, students) in zip(axes, PANELS):
        def draw(prefix: str, label: str, **style) -> str:
            """One line per sampler of the reports ``prefix*``, each step count the mean over sampling seeds."""
            colour = ""
            for sampler, by_nfe in sorted(series(args.results, prefix).items()):
                xs = sorted(by_nfe)
                ys = [sum(by_nfe[x]) / len(by_nfe[x]) for x in xs]
                (line,) = ax.plot(xs, ys, label=label.format(sampler=sampler), **style)
                colour = line.get_color()
            return colour

        for label, prefix in students:
            colour = draw(prefix, label, marker="o", linewidth=2)
            # the second distillation: its first one's colour, dotted
            draw(prefix.replace("_steps", "_train1_steps"), f"{label}, train seed 1",
                 marker="x", linestyle=":", linewidth=1.5, color=colour)
        draw(teacher, "teacher, {sampler}", linestyle="--", marker="s", alpha=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_yticks([1.5, 2, 3, 4, 6, 8, 10, 15, 20])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("network evaluations per sample")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("FID (gentool-cnn28 features, n = 1,000, mean of 2 seeds)")
    fig.suptitle("Few-step students against their teachers' solvers (Fashion-MNIST, 2 CPU cores)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
