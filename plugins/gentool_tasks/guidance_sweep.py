"""The ``guidance_sweep`` task: the same seeds at several guidance scales side by side."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from gentool import SamplingOptions, TaskResult, sampling_task, save_grid

from gentool_tasks.animate import label_columns
from gentool_tasks.class_grid import require_classes


@sampling_task(exclude=("guidance",))
def guidance_sweep(
    run,
    out_dir: Path,
    *,
    sampling: SamplingOptions,
    scales: list[float] = [0.0, 1.0, 2.0, 4.0],  # noqa: B006 - never mutated
    n: int = 8,
    classes: list[int] = [],  # noqa: B006
) -> TaskResult:
    """Samples at each classifier-free guidance weight w, from the same start noise and seed.

    Writes ``guidance_sweep.png`` (one row per sample, one column per scale,
    in the order of ``scales``) and ``guidance_w{w}.png`` for each scale.
    w is the weight of eps~ = (1 + w) eps(x, c) - w eps(x, null), so w = 0 is
    plain conditional sampling (the other common form's scale is s = 1 + w).

    Args:
        scales: the guidance weights w to compare.
        n: samples per scale; their labels cycle through ``classes``.
        classes: the classes to ask for (default: every class in turn).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not scales:
        raise ValueError("scales must list at least one guidance weight")
    pool = require_classes(run, classes, "guidance_sweep")
    labels = torch.tensor([pool[i % len(pool)] for i in range(n)])
    x_T = run.noise(n, run.generator(sampling.seed))
    files, columns = [], []
    for w in scales:
        x = run.sample(x_T=x_T, options=replace(sampling, labels=labels, guidance=float(w)),
                       generator=run.generator(sampling.seed), description=f"guidance_sweep: w = {w:g}")
        columns.append(x)
        files.append(save_grid(x, out_dir / f"guidance_w{w:g}.png"))
    side_by_side = torch.stack(columns, dim=1).flatten(0, 1)  # [n * len(scales)], sample-major
    sweep = save_grid(side_by_side, out_dir / "guidance_sweep.png", nrow=len(scales))
    files.insert(0, label_columns(sweep, [f"w = {w:g}" for w in scales]))  # one column per w, labelled
    return TaskResult(files=files)
