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
        nrow: images per grid row (default: about sqrt(n)).
        save_individual: also write every image as its own PNG.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    labels = None
    if run.num_classes:
        pool = list(classes) or list(range(run.num_classes))
        labels = torch.tensor([pool[i % len(pool)] for i in range(n)])
    x = run.sample(n, options=replace(sampling, labels=labels), generator=run.generator(sampling.seed),
                   description=f"sample ({n} images)")
    files = [save_grid(x, out_dir / "grid.png", nrow=nrow)]
    if save_individual:
        files += save_images(x, out_dir / "images")
    return TaskResult(files=files)
