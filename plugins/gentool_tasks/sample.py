"""The ``sample`` task: a grid of generated images and each image as a PNG."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from gentool import SamplingOptions, TaskResult, sampling_task, save_grid, save_images


@sampling_task
def sample(
    run,
    out_dir: Path,
    *,
    sampling: SamplingOptions,
    n: int = 64,
    classes: list[int] = [],
    nrow: int | None = None,
    save_individual: bool = True,
) -> TaskResult:
    """Generate ``n`` images; write ``grid.png`` and ``images/00000.png``, ...

    Args:
        n: number of images.
        classes: class labels to cycle through for a conditional model (default: all classes in turn).
        nrow: images per grid row (default: one column per class cycled through for a conditional
            model, about sqrt(n) otherwise).
        save_individual: also write every image as its own PNG (``images/00000.png``, or
            ``images/00000_class3.png`` for a conditional model).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if nrow is not None and nrow < 1:
        raise ValueError(f"nrow must be at least 1, got {nrow}")
    labels = None
    if run.num_classes:
        pool = list(classes) or list(range(run.num_classes))
        labels = torch.tensor([pool[i % len(pool)] for i in range(n)])
        nrow = len(pool) if nrow is None else nrow
    x = run.sample(n, options=replace(sampling, labels=labels), generator=run.generator(sampling.seed),
                   description=f"sample ({n} images)")
    files = [save_grid(x, out_dir / "grid.png", nrow=nrow)]
    if save_individual:
        paths = save_images(x, out_dir / "images")
        if labels is not None:
            paths = [p.rename(p.with_name(f"{i:05d}_class{int(labels[i])}.png")) for i, p in enumerate(paths)]
        files += paths
    return TaskResult(files=files)
