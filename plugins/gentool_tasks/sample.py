"""The ``sample`` task: a grid of generated images and each image as a PNG."""

from __future__ import annotations

from pathlib import Path

import torch

from gentool import TaskResult, save_grid, save_images


def sample(
    run,
    out_dir: Path,
    *,
    n: int = 64,
    seed: int | None = None,
    classes: list[int] = [],
    guidance: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    nrow: int | None = None,
    save_individual: bool = True,
) -> TaskResult:
    """Generate ``n`` images; write ``grid.png`` and ``images/00000.png``, ...

    Args:
        n: number of images.
        seed: seed of the start noise (default: the recipe's ``[run] seed``).
        classes: class labels to cycle through for a conditional model (default: all classes in turn).
        guidance: classifier-free guidance weight w (default: the recipe's ``[sampler] guidance``).
        sampler: a registered sampler name (default: the recipe's ``[sampler]``).
        steps: sampling steps (default: the recipe's ``[sampler] steps``, else all T).
        nrow: images per grid row (default: about sqrt(n)).
        save_individual: also write every image as its own PNG.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    labels = None
    if run.num_classes:
        pool = list(classes) or list(range(run.num_classes))
        labels = torch.tensor([pool[i % len(pool)] for i in range(n)])
    x = run.sample(n, labels=labels, guidance=guidance, steps=steps, sampler=sampler,
                   generator=run.generator(seed), description=f"sample ({n} images)")
    files = [save_grid(x, out_dir / "grid.png", nrow=nrow)]
    if save_individual:
        files += save_images(x, out_dir / "images")
    return TaskResult(files=files)
