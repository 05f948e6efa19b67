"""The ``class_grid`` task: one row of samples per class, the same seeds in every row."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from gentool import SamplingOptions, TaskResult, sampling_task, save_grid


def class_names(run) -> list[str] | None:
    """The data set's class names, if the recipe has data and it is at hand."""
    try:
        return list(run.dataset("train").classes)
    except Exception:  # noqa: BLE001 - sampling-only runs may have no data
        return None


def require_classes(run, classes: list[int], task: str) -> list[int]:
    """``classes`` checked against the run's conditioner (default: all of them)."""
    if not run.num_classes:
        raise ValueError(f"{task} needs a class-conditional run ([conditioner] in the recipe); this one is unconditional")
    bad = [c for c in classes if not 0 <= c < run.num_classes]
    if bad:
        raise ValueError(f"{task}: classes must be in 0..{run.num_classes - 1}, got {bad}")
    return list(classes) or list(range(run.num_classes))


@sampling_task
def class_grid(
    run,
    out_dir: Path,
    *,
    sampling: SamplingOptions,
    n_per_class: int = 8,
    classes: list[int] = [],  # noqa: B006 - never mutated; a list as a recipe writes it
) -> TaskResult:
    """One row per class, ``n_per_class`` samples each; column j has the same start noise in every row.

    Writes ``class_grid.png`` and ``class_grid.txt`` (the class of each row).

    Args:
        n_per_class: samples per class (the grid's columns).
        classes: the classes to show, one row each (default: every class).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    classes = require_classes(run, classes, "class_grid")
    x_T = run.noise(n_per_class, run.generator(sampling.seed))
    rows = []
    for c in classes:  # row by row: memory stays at one row, and every row reuses the seeds
        labels = torch.full((n_per_class,), c, dtype=torch.long)
        rows.append(run.sample(x_T=x_T, options=replace(sampling, labels=labels), generator=run.generator(sampling.seed),
                               description=f"class_grid: class {c}"))
    grid = save_grid(torch.cat(rows), out_dir / "class_grid.png", nrow=n_per_class)
    names = class_names(run)
    lines = [f"row {i}: class {c}" + (f" ({names[c]})" if names and c < len(names) else "") for i, c in enumerate(classes)]
    legend = out_dir / "class_grid.txt"
    legend.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return TaskResult(files=[grid, legend])
