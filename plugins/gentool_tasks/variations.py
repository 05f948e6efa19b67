"""The ``variations`` task: SDEdit (Meng et al. 2022) on any process.

An input x_0 is noised to time t with q(x_t | x_0) = N(alpha x_0, sigma^2 I)
(Ho et al. eq. 4) and the reverse process runs from there (``t_start``), so the
result keeps the input's coarse structure and re-invents its details; larger t
strays further.

``t`` is a fraction of the way from the data to the noisiest time, as SDEdit's
t_0 in [0, 1] (:meth:`gentool.Process.time_at`): ``t = 0`` adds no noise and
returns the input unchanged, ``t = 1`` starts from the noisiest time (the
result is then unrelated to the input). On the discrete chain the input goes
through ``round(t * T)`` forward steps: the noised image is x at the 0-based
``t_start = round(t * T) - 1``. In a latent run the input's latents are
noised and the result decoded.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from gentool import SamplingOptions, TaskResult, as_batch, sampling_task, save_grid

from gentool_tasks.inputs import load_inputs


def noised_step(t: float, process) -> float:
    """The time reached by noising a fraction ``t`` of the way (``process.time_at``, which refuses t outside [0, 1])."""
    return process.time_at(t)


@torch.no_grad()
def vary(
    run,
    x0: Tensor,
    t: float,
    n: int = 1,
    *,
    sampling: SamplingOptions | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    **option_values,
) -> Tensor:
    """``n`` SDEdit variations of each image of ``x0``: ``[B * n, C, H, W]``, grouped by input.

    ``sampling`` (or its fields as keywords, ``labels`` one per input image) is the sampling request.
    """
    sampling = SamplingOptions.merge(sampling, **option_values)
    labels = sampling.labels
    process = run.process
    t_start = noised_step(t, process)
    x = x0.to(run.device).repeat_interleave(n, 0)
    if t_start <= process.t_data:
        return x.clone()  # no noise, nothing to undo
    generator = generator if generator is not None else run.generator(sampling.seed)
    z = run.encode(x0.to(run.device)).repeat_interleave(n, 0)  # a latent run: the latents (pixel space: x)
    noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    tt, shape = as_batch(z, t_start, process), (-1, *[1] * (z.ndim - 1))
    x_t = process.alpha(tt).reshape(shape) * z + process.sigma(tt).reshape(shape) * noise  # eq. 4
    labels = torch.as_tensor(labels).repeat_interleave(n, 0) if labels is not None else None
    return run.sample(x_T=x_t, options=replace(sampling, t_start=t_start, labels=labels), generator=generator,
                      progress=progress, description=f"variations (t = {t})")


@sampling_task
def variations(
    run,
    out_dir: Path,
    *,
    sampling: SamplingOptions,
    t: float = 0.5,
    n: int = 4,
    indices: list[int] = [0, 1, 2, 3], split: Literal["train", "test"] = "test", images: list[str] = [],
    label: int | None = None,
) -> TaskResult:
    """SDEdit variations of input images; write ``variations.png`` (each row: the input, then its variations).

    Metric: ``mse_to_input``, the mean squared distance of the variations
    from their inputs (on the [-1, 1] scale).

    Args:
        t: how far to noise the inputs, a fraction of the way from the data
            to the noisiest time (SDEdit's t_0; on the discrete chain of the T
            steps): 0 returns the inputs, 1 starts from pure noise.
        n: variations per input image.
        indices: positions in the data set's ``split`` of the input images.
        split: the data split the indices refer to.
        images: image files to use instead of data-set images.
        label: class for a conditional model (default: each data-set image's own label; none for files).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    x0, labels = load_inputs(run, indices=indices, split=split, images=images, label=label)
    out = vary(run, x0, t, n, sampling=replace(sampling, labels=labels), generator=run.generator(sampling.seed))
    rows = torch.cat([x0[:, None], out.view(len(x0), n, *x0.shape[1:])], 1).flatten(0, 1)
    path = save_grid(rows, Path(out_dir) / "variations.png", nrow=n + 1)
    mse = float(((out - x0.repeat_interleave(n, 0)) ** 2).mean())
    return TaskResult(files=[path], metrics={"mse_to_input": mse})
