"""The ``inpaint`` task: complete images given a mask of known pixels.

After every reverse step the known region of the new state x_{t_next} is
replaced by a fresh draw of q(x_{t_next} | x_0) of the known image (Lugmayr et
al. 2022, eq. 8; the "replacement" method): a sampler callback, so it works
with every sampler and process. After the last step (to the data) the known
pixels are pasted exactly. RePaint's resampling (Lugmayr et al. 2022, sec.
4.2, Algorithm 1) jumps back from the current time by ``jump_length`` steps
with q(x_{t+j} | x_t) and denoises again, ``resamplings`` times, over the
toolkit's ancestral step (:func:`gentool.reverse.ancestral_step`).

In a latent run the sampler's states are latents: the known region is
replaced on the latent grid, where a cell counts as known only if every pixel
it covers is (the mask min-pooled: the hole grows to whole cells), or, with
``mask_space = "pixel"``, the known pixels are put into the decoded
prediction of x_0 at every step, which is encoded again and moves the state
by alpha_s times the change (:func:`replace_known_pixels`). Either way the
known pixels are pasted exactly into the decoded result.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gentool import (SamplingOptions, TaskResult, ancestral_step, as_batch, data_time, plan, renoise, sampling_task,
                     save_grid)

from gentool_tasks.inputs import load_inputs
from gentool_tasks.masks import MaskName, make_mask

EIGHT = [0, 1, 2, 3, 4, 5, 6, 7]
DEFAULT_STEPS = 100  # the recipes' setting: RePaint with r = 2, j = 5 over 100 ancestral steps


def replace_known(process, x0: Tensor, known: Tensor, generator: torch.Generator | None) -> Callable:
    """A sampler callback: known region of x_{t_next} <- a sample of q(x_{t_next} | x_0) = alpha x_0 + sigma eps."""

    def callback(info: dict) -> Tensor:
        x, s = info["x"], info["t_next"]
        if s == data_time(process):
            x_known = x0  # the final x_0: the known pixels themselves
        else:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            tt = as_batch(x, s, process)
            shape = (-1, *[1] * (x.ndim - 1))
            x_known = process.alpha(tt).reshape(shape) * x0 + process.sigma(tt).reshape(shape) * noise  # eq. 4
        return known * x_known + (1 - known) * x

    return callback


def latent_mask(known: Tensor, size: tuple[int, int]) -> Tensor:
    """``known`` ``[B, 1, H, W]`` on a latent grid ``size``: a cell is known only where all its pixels are."""
    return 1 - F.adaptive_max_pool2d(1 - known, tuple(size))


def replace_known_pixels(run, x0: Tensor, known: Tensor) -> Callable:
    """A sampler callback for a latent run: decode the step's x0 prediction, put the known pixels of ``x0`` in,
    encode it again, and move the state x_{t_next} by alpha(t_next) times the change of its x0 (at the data end
    the state becomes that encoding)."""
    process = run.process

    def callback(info: dict) -> Tensor:
        x, s, z0_hat = info["x"], info["t_next"], info["x0"]
        z_mixed = run.encode(known * x0 + (1 - known) * run.decode(z0_hat))
        if s == data_time(process):
            return z_mixed
        alpha = process.alpha(as_batch(x, s, process)).reshape(-1, *[1] * (x.ndim - 1))
        return x + alpha * (z_mixed - z0_hat)

    return callback


def jump_schedule(n: int, jump_length: int, resamplings: int) -> list[int]:
    """Positions ``0..n`` visited by RePaint (0: x_T, ``n``: x_0), as in Lugmayr et al.'s code.

    Walking down one position at a time, at every ``jump_length``-th timestep
    the walk jumps back up ``jump_length`` positions, ``resamplings - 1`` times.
    """
    if jump_length < 1 or resamplings < 1:
        raise ValueError(f"jump_length and resamplings must be at least 1, got {jump_length}, {resamplings}")
    jumps = {u: resamplings - 1 for u in range(0, n - jump_length, jump_length)}
    u, times = n, []
    while u >= 1:
        u -= 1
        times.append(u)
        if jumps.get(u, 0) > 0:
            jumps[u] -= 1
            u += jump_length  # one jump of j steps (the reference code takes j single steps)
            times.append(u)
    times.append(-1)
    return [n - 1 - v for v in times]  # time u (n-1 ... -1) to position


@torch.no_grad()
def repaint(
    denoise,
    process,
    x0: Tensor,
    known: Tensor,
    x_T: Tensor,
    *,
    steps: int | None = None,
    jump_length: int = 10,
    resamplings: int = 10,
    generator: torch.Generator | None = None,
    variance: Literal["beta", "beta_tilde"] = "beta",
    clip_denoised: bool = True,
    progress: bool = True,
    paste: Callable | None = None,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Algorithm 1) over the (possibly respaced) times, with the ancestral step.

    Down moves are :func:`gentool.reverse.ancestral_step` (the ``ancestral``
    sampler's own step, learned variance and the model's x0 where alpha is 0
    included); up moves draw q(x_s | x_t) (:func:`gentool.reverse.renoise`).
    ``paste`` replaces the known region after each down move (default:
    :func:`replace_known` of ``x0`` and ``known``).
    """
    from gentool import make_progress

    ts = list(process.grid(steps, None, "uniform")) + [data_time(process)]
    path = jump_schedule(len(ts) - 1, jump_length, resamplings)
    paste = paste or replace_known(process, x0, known, generator)
    x = x_T
    with make_progress(transient=True) as bar:
        task = bar.add_task(f"RePaint (j={jump_length}, r={resamplings})", total=len(path) - 1, visible=progress)
        for p, q in zip(path[:-1], path[1:]):
            t, s = ts[p], ts[q]
            if q == p + 1:  # down: denoise, then put the known region back
                x, x0_hat = ancestral_step(denoise, process, x, t, s, generator=generator, variance=variance,
                                           clip_denoised=clip_denoised)
                x = paste({"x": x, "t_next": s, "x0": x0_hat})
            else:  # up: jump back from the current time
                x = renoise(process, x, t, s, generator)
            bar.advance(task)
    return x


def inpaint_images(
    run,
    x0: Tensor,
    known: Tensor,
    *,
    sampling: SamplingOptions | None = None,
    resamplings: int = 1,
    jump_length: int = 10,
    generator: torch.Generator | None = None,
    progress: bool = True,
    mask_space: Literal["latent", "pixel"] = "latent",
    **option_values,
) -> Tensor:
    """Inpaint ``x0`` (``[B, C, H, W]`` in [-1, 1]) where ``known`` (``[B, 1, H, W]``) is 0.

    ``sampling`` (or its fields as keywords: ``labels``, ``guidance``,
    ``sampler``, ``steps``, ...) is resolved by the sampling service; RePaint
    (``resamplings > 1``) runs the ancestral step with the sampler options of
    ``ancestral`` (the recipe's, when it is the recipe's sampler). In a latent
    run ``mask_space`` says where the known region is put back (see the
    module's docstring); pixel space ignores it.
    """
    sampling = SamplingOptions.merge(sampling, **option_values)
    generator = generator if generator is not None else run.generator(sampling.seed)
    x0, known = x0.to(run.device), known.to(run.device)
    z0, latent = run.encode(x0), run.latent  # pixel space: x0 itself
    if mask_space not in ("latent", "pixel"):
        raise ValueError(f"mask_space must be 'latent' or 'pixel', got {mask_space!r}")
    x_T = run.noise(x0.shape[0], generator)
    if latent and mask_space == "pixel":
        paste = replace_known_pixels(run, x0, known)
    else:
        paste = replace_known(run.process, z0, latent_mask(known, z0.shape[-2:]) if latent else known, generator)
    if resamplings <= 1:
        out = run.sample(x_T=x_T, options=sampling, generator=generator, callback=paste,
                         progress=progress, description=f"inpaint ({x0.shape[0]} images)")
    else:
        if sampling.sampler not in (None, "ancestral"):
            raise ValueError(f"RePaint resampling (resamplings > 1) runs the ancestral step; sampler "
                             f"{sampling.sampler!r} cannot be used")
        p = plan(run, replace(sampling, sampler="ancestral"))
        opts = p.sampler.keywords  # the ancestral sampler's resolved options (variance, clip_denoised)
        out = run.decode(repaint(p.denoise, run.process, z0, known, x_T, steps=p.steps, jump_length=jump_length,
                                 resamplings=resamplings, generator=generator, variance=opts["variance"],
                                 clip_denoised=opts["clip_denoised"], progress=progress, paste=paste))
    return known * x0 + (1 - known) * out if latent else out  # a latent run: the known pixels exactly


@sampling_task(docs={"steps": "sampling steps (default: 100, at most the discrete chain's T; RePaint's "
                               "resampling repeats each jump's steps)."})
def inpaint(
    run,
    out_dir: Path,
    *,
    sampling: SamplingOptions,
    indices: list[int] = EIGHT, split: Literal["train", "test"] = "test", images: list[str] = [],
    mask: MaskName = "centre",
    fraction: float = 0.25,
    mask_file: str = "",
    resamplings: int | None = None,
    jump_length: int = 5,
    label: int | None = None,
    mask_space: Literal["latent", "pixel"] = "latent",
) -> TaskResult:
    """Fill in a masked region of images; write ``inpaint.png`` and ``results.png``.

    ``inpaint.png`` has one row per image: the input, the input with its hole
    in grey, the result. Metrics: ``hole_mse`` (result vs input inside the
    hole, on the [-1, 1] scale) and ``known_max_error`` (0: known pixels kept).
    The defaults (a centre box of a quarter of the image, RePaint with r = 2,
    j = 5 over 100 ancestral steps) are what the recipes use; ``gentool
    inpaint RUN`` takes the same.

    Args:
        indices: positions in the data set's ``split`` of the images to inpaint.
        split: the data split the indices refer to.
        images: image files to inpaint instead of data-set images.
        mask: the hole (the region painted in): the ``left``, ``right``,
            ``top`` or ``bottom`` half, a ``centre`` box, ``random`` pixels or
            random brush ``strokes`` (a new random mask per image).
        fraction: area of the hole for ``centre``, ``random`` and ``strokes`` (0 to 1).
        mask_file: a mask image used instead of the preset: white = hole,
            black = keep (resized to the model's size).
        resamplings: RePaint's r: times each jump is resampled (1: plain
            replacement, works with every sampler; > 1 uses the ancestral step).
            Default: 2 when sampling with ``ancestral``, 1 with any other sampler.
        jump_length: RePaint's j: timesteps jumped back each time.
        label: class for a conditional model (default: each data-set image's own label; none for files).
        mask_space: a latent run (an ``[autoencoder]``): ``latent`` replaces
            the known region on the latent grid (a cell is known where all its
            pixels are); ``pixel`` puts the known pixels into each step's
            decoded prediction and encodes it again (a decode and an encode
            per step). Pixel-space runs ignore it.
    """
    x0, labels = load_inputs(run, indices=indices, split=split, images=images, label=label)
    if sampling.steps is None:
        T = getattr(run.process, "num_timesteps", None)
        sampling = replace(sampling, steps=min(DEFAULT_STEPS, T) if T else DEFAULT_STEPS)
    seed = run.recipe.run.seed if sampling.seed is None else sampling.seed
    generator = run.generator(seed)
    mask_gen = torch.Generator().manual_seed(seed)
    known = make_mask(len(x0), run.image_shape[1:], mask=mask, fraction=fraction, mask_file=mask_file,
                      generator=mask_gen).to(run.device)
    if resamplings is None:
        resamplings = 2 if (sampling.sampler or run.recipe.sampler.name) == "ancestral" else 1
    out = inpaint_images(run, x0, known, sampling=replace(sampling, labels=labels), resamplings=resamplings,
                         jump_length=jump_length, generator=generator, mask_space=mask_space)
    masked = known * x0  # the hole shows as mid-grey (0 on the [-1, 1] scale)
    rows = torch.stack([x0, masked, out], 1).flatten(0, 1)
    files = [save_grid(rows, Path(out_dir) / "inpaint.png", nrow=3), save_grid(out, Path(out_dir) / "results.png")]
    hole = (1 - known).expand_as(x0)
    metrics = {
        "hole_mse": float(((out - x0) ** 2 * hole).sum() / hole.sum().clamp(min=1)),
        "known_max_error": float(((out - x0).abs() * known).max()),
    }
    return TaskResult(files=files, metrics=metrics)
