"""The ``animate`` task: pictures of the forward and the reverse process.

* forward: input images noised by q(x_t | x_0) (Ho et al. eq. 4) at evenly
  spaced t, one fixed noise draw for all t, from the clean image to x_T;
* reverse: the trajectory of a grid of samples from x_T to x_0, as the state
  x_t or as the prediction of x_0 at each step.

Each is written as a PNG strip (one row per image, one column per frame) and
an animated GIF (one frame per requested step; each frame the grid of images
with a caption saying where in the process it is). In a latent run both
processes run on latents and every frame is decoded (a noisy latent decodes
to the autoencoder's picture of noise, not to a noisy image).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from gentool import SamplingOptions, TaskResult, as_batch, make_grid, plan, sampling_task, save_grid, to_uint8

from gentool_tasks.inputs import load_inputs


def positions(frames: int, total: int) -> list[int]:
    """``frames`` evenly spaced integers from 0 to ``total``, both ends included, all distinct."""
    if frames < 2:
        raise ValueError(f"frames must be at least 2 (the start and the end), got {frames}")
    if frames > total + 1:
        raise ValueError(f"frames must be at most {total + 1} here (one per step, plus the start), got {frames}")
    return [(2 * k * total + frames - 1) // (2 * (frames - 1)) for k in range(frames)]  # round half up


def gif_frame(batch: Tensor, caption: str, nrow: int, scale: int):
    """One GIF frame: the grid of ``batch`` enlarged ``scale`` times, with a caption underneath."""
    from PIL import Image, ImageDraw, ImageFont

    grid = to_uint8(make_grid(batch.float().cpu(), nrow=nrow, padding=2, pad_value=-1.0))
    mode = "L" if grid.shape[0] == 1 else "RGB"
    im = Image.fromarray(grid[0].numpy() if mode == "L" else grid.permute(1, 2, 0).numpy(), mode)
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    font = ImageFont.load_default()
    left, top, right, bottom = ImageDraw.Draw(im).textbbox((0, 0), caption, font=font)
    band = bottom + 4
    frame = Image.new(mode, (max(im.width, right + 4), im.height + band), 0)
    frame.paste(im, (0, 0))
    ImageDraw.Draw(frame).text((2, im.height + 2), caption, fill=255 if mode == "L" else (255, 255, 255), font=font)
    return frame


def save_gif(batches: list[Tensor], captions: list[str], path: Path, *, duration: int = 100, scale: int = 2) -> Path:
    """An animated GIF with one frame per batch (a grid), looping; the last frame is held longer.

    Captions must differ from frame to frame: Pillow merges identical frames.
    """
    if scale < 1 or duration < 1:
        raise ValueError(f"scale and duration must be at least 1, got {scale}, {duration}")
    nrow = max(1, math.ceil(math.sqrt(batches[0].shape[0])))
    images = [gif_frame(b, c, nrow, scale) for b, c in zip(batches, captions)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [duration] * (len(images) - 1) + [duration * 10]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def save_strip(frames: Tensor, path: Path, labels: list[str] | None = None) -> Path:
    """``frames`` ``[F, B, C, H, W]`` as a grid with one row per image and one column per frame.

    ``labels`` (one per frame, e.g. ``t = 250``) go in a band above the columns (:func:`label_columns`).
    """
    path = save_grid(frames.transpose(0, 1).flatten(0, 1), path, nrow=frames.shape[0])
    return label_columns(path, labels) if labels else path


def label_columns(path: Path, labels: list[str], *, padding: int = 2) -> Path:
    """Rewrite the PNG grid at ``path`` with a band above it holding one label per column.

    The grid is enlarged (nearest neighbour, a whole factor) until the widest
    label fits its column, so small images (28x28) still get readable labels.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    with Image.open(path) as image:
        im = image.copy()
    measure = ImageDraw.Draw(im)
    boxes = [measure.textbbox((0, 0), text, font=font) for text in labels]
    column = (im.width - padding) / len(labels)
    scale = max(1, math.ceil((max(b[2] for b in boxes) + 2 * padding) / column))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    band = max(b[3] for b in boxes) + 2 * padding
    out = Image.new(im.mode, (im.width, im.height + band), 0)
    out.paste(im, (0, band))
    draw, white = ImageDraw.Draw(out), 255 if im.mode == "L" else (255,) * len(im.mode)
    for k, (text, box) in enumerate(zip(labels, boxes)):
        left = padding * scale + k * column * scale + (column * scale - padding * scale - box[2]) / 2
        draw.text((max(0, left), padding), text, fill=white, font=font)
    out.save(path)
    return path


def forward_frames(process, x0: Tensor, frames: int, noise: Tensor) -> tuple[Tensor, list[str]]:
    """x_t = alpha(t) x_0 + sigma(t) eps (eq. 4) from the data to the noisiest time (``frames`` of them).

    On the discrete chain after 0, ..., T forward steps; elsewhere at evenly
    spaced fractions of the way (:meth:`gentool.Process.time_at`). Returns
    ``[F, B, C, H, W]`` and each frame's caption (``t = k/T`` or ``t = 0.5``).
    """
    T = getattr(process, "num_timesteps", None)
    if getattr(process, "discrete", False) and T is not None:
        counts = positions(frames, T)
        times, captions = [k - 1 for k in counts], [f"t = {k}/{T}" for k in counts]
    else:
        fractions = [k / (frames - 1) for k in range(frames)] if frames > 1 else [1.0]
        times = [process.time_at(f) for f in fractions]
        captions = [f"t = {t:.3g}" for t in times]
    out, shape = [], (-1, *[1] * (x0.ndim - 1))
    for t in times:
        if t <= process.t_data:
            out.append(x0.clone())
            continue
        tt = as_batch(x0, t, process)
        out.append(process.alpha(tt).reshape(shape) * x0 + process.sigma(tt).reshape(shape) * noise)
    return torch.stack(out), captions


@torch.no_grad()
def reverse_frames(run, x_T: Tensor, frames: int, *, show: str = "x", generator=None,
                   sampling: SamplingOptions | None = None, **option_values) -> tuple[Tensor, list[int], int]:
    """Snapshots of a sampling run: ``[F, B, C, H, W]``, the step of each (0: x_T) and the step count.

    ``sampling`` (or its fields as keywords: ``labels``, ``guidance``, ``sampler``, ``steps``) is the request.
    """
    sampling = SamplingOptions.merge(sampling, **option_values)
    total = len(plan(run, sampling).grid())
    keep = set(positions(frames, total))
    shots: dict[int, Tensor] = {0: x_T.detach().cpu().clone()}

    def record(info: dict) -> None:
        if info["i"] + 1 in keep:
            shots[info["i"] + 1] = info["x" if show == "x" else "x0"].detach().cpu().clone()

    run.sample(x_T=x_T, options=sampling, generator=generator, callback=record,
               description=f"reverse process ({x_T.shape[0]} images)")
    order = sorted(keep)
    missing = [p for p in order if p not in shots]
    if missing:
        raise RuntimeError(f"sampler {sampling.sampler or run.recipe.sampler.name!r} ran fewer steps than {total}; "
                           f"no frame for {missing}")
    return torch.stack([run.decode(shots[p]).cpu() for p in order]), order, total  # a latent run: decoded


@sampling_task
def animate(
    run,
    out_dir: Path,
    *,
    sampling: SamplingOptions,
    n: int = 16,
    frames: int = 10,
    show: Literal["x", "x0"] = "x",
    forward: bool = True,
    indices: list[int] = [0, 1, 2, 3], split: Literal["train", "test"] = "test", images: list[str] = [],
    label: int | None = None,
    duration: int = 100,
    scale: int = 2,
) -> TaskResult:
    """Animate the diffusion: ``reverse.png``/``.gif`` (sampling) and ``forward.png``/``.gif`` (noising).

    Args:
        n: images in the reverse-process grid.
        frames: frames of each animation (and columns of each strip), evenly
            spaced from start to end; at most the number of sampling steps + 1.
        show: what the reverse process shows: the state ``x`` (x_t) or ``x0``,
            the prediction of x_0 made at each step.
        forward: also picture the forward process of input images.
        indices: positions in the data set's ``split`` of the forward process's images.
        split: the data split the indices refer to.
        images: image files for the forward process instead of data-set images.
        label: class of every sample for a conditional model (default: cycle through the classes).
        duration: milliseconds per GIF frame (the last frame stays 10 times longer).
        scale: GIF frames are enlarged this many times (nearest neighbour).
    """
    out_dir, files = Path(out_dir), []
    generator = run.generator(sampling.seed)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    labels = None
    if run.num_classes:
        labels = torch.tensor([label if label is not None else k % run.num_classes for k in range(n)], device=run.device)
    x_T = run.noise(n, generator)
    shots, order, total = reverse_frames(run, x_T, frames, show=show, generator=generator,
                                         sampling=replace(sampling, labels=labels))
    files.append(save_strip(shots, out_dir / "reverse.png", [f"step {p}" for p in order]))
    caps = [f"step {p}/{total}" for p in order]
    files.append(save_gif(list(shots), caps, out_dir / "reverse.gif", duration=duration, scale=scale))
    if forward:
        x0, _ = load_inputs(run, indices=indices, split=split, images=images)
        z0 = run.encode(x0)  # a latent run: the latents are noised, and each frame decoded
        noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        fwd, caps = forward_frames(run.process, z0, frames, noise)
        fwd = torch.stack([run.decode(f) for f in fwd])
        files.append(save_strip(fwd, out_dir / "forward.png", [c.split("/")[0] for c in caps]))
        files.append(save_gif(list(fwd), caps, out_dir / "forward.gif", duration=duration, scale=scale))
    return TaskResult(files=files)
