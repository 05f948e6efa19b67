"""The ``interpolate`` task: paths between two random seeds or between two images.

* ``slerp``: spherical interpolation (Shoemake 1985) of two start noises x_T,
  each frame decoded by the sampler;
* ``latent``: Ho et al. (2020), sec. 4.3: both images are noised to step t
  with the *same* noise, x_t = q_sample(x_0, t, eps) and x'_t likewise, mixed
  linearly, x-bar_t = (1 - lambda) x_t + lambda x'_t, and decoded by the
  reverse process from t.

Every frame is decoded with the same sampler noise (the generator is reset to
one state before each frame), so neighbouring frames differ only through
lambda, and the frames at lambda = 0 and 1 are exactly the decodings of the
two end points. ``t`` is a fraction of the diffusion as in the ``variations``
task: the images go through ``round(t * T)`` forward steps (Ho et al.'s
t = 500 of T = 1000 is t = 0.5; t = 0 interpolates the pixels).

``t`` trades reconstruction for novelty. Noised to step t an image keeps
sqrt(abar_t) of its signal under noise of standard deviation sqrt(1 - abar_t);
for the linear schedule of T = 1000 that is 0.95 / 0.32 at t = 0.1, 0.81 /
0.58 at t = 0.2 (signal-to-noise ratio 1.9), 0.63 / 0.78 at t = 0.3 and
0.28 / 0.96 at t = 0.5 (SNR 0.09). Small t: the end frames reconstruct the
two inputs and the frames between stay close to a blend of them; large t: the
frames are new images that no longer resemble the inputs. Ho et al.'s t = 0.5
suits 256x256 faces; a 28x28 image keeps almost nothing at that noise level
(every frame decodes to the same unrelated garment), so the Fashion-MNIST
recipe uses t = 0.2. In a latent run both modes work on latents (the
images' encodings; start noises of the latent shape) and every frame is
decoded.

``slerp`` frames are decoded with a deterministic sampler, DDIM with eta = 0,
unless ``sampler`` names another: with an ancestral sampler the fresh noise
of each step, the same for every frame, would outweigh the differences
between the start noises and all frames would look alike.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from gentool import SamplingOptions, TaskResult, as_batch, sampling_task, save_grid

from gentool_tasks.animate import save_gif, save_strip
from gentool_tasks.inputs import class_labels, load_inputs
from gentool_tasks.invert import load_latents
from gentool_tasks.variations import noised_step


def slerp(a: Tensor, b: Tensor, lam: float) -> Tensor:
    """Spherical interpolation per sample: sin((1-l) theta)/sin theta a + sin(l theta)/sin theta b."""
    a64, b64 = a.double().flatten(1), b.double().flatten(1)
    cos = (a64 * b64).sum(1) / (a64.norm(dim=1) * b64.norm(dim=1))
    theta = cos.clamp(-1, 1).acos()[:, None]
    small = theta < 1e-6  # (nearly) parallel: the straight line is the arc
    sin = theta.sin().where(~small, torch.ones_like(theta))
    wa = torch.where(small, 1 - lam, ((1 - lam) * theta).sin() / sin)
    wb = torch.where(small, torch.full_like(theta, lam), (lam * theta).sin() / sin)
    return (wa * a64 + wb * b64).view(a.shape).to(a.dtype)


def lambdas(frames: int) -> list[float]:
    if frames < 2:
        raise ValueError(f"frames must be at least 2 (the two end points), got {frames}")
    return [k / (frames - 1) for k in range(frames)]


#: the sampler and options that decode slerp frames unless the task's ``sampler`` names another
DETERMINISTIC = ("ddim", {"eta": 0.0})


@torch.no_grad()
def decode_frames(run, starts: list[Tensor], t_start: float, generator: torch.Generator, *, labels=None,
                  sampling: SamplingOptions | None = None, **option_values) -> Tensor:
    """Run the reverse process from each start (at ``t_start``) with the same sampler noise: ``[F, B, ...]``.

    ``labels`` is ``None`` or one label tensor per frame; ``sampling`` (or its fields as keywords) the
    request. ``t_start`` at the data returns the starts.
    """
    if t_start <= run.process.t_data:
        return torch.stack([run.decode(x) for x in starts])  # pixel space: the starts themselves
    sampling = SamplingOptions.merge(sampling, **option_values)
    state = generator.get_state()
    out = []
    for k, x in enumerate(starts):
        generator.set_state(state)
        frame = replace(sampling, t_start=t_start, labels=None if labels is None else labels[k])
        out.append(run.sample(x_T=x, options=frame, generator=generator,
                              description=f"frame {k + 1}/{len(starts)}"))
    return torch.stack(out)


def interpolate_latent(run, x_a: Tensor, x_b: Tensor, lams: list[float], t: float, *, noise: Tensor,
                       generator: torch.Generator, labels=None, **sample_kw) -> Tensor:
    """Ho et al. sec. 4.3: noise both to step t with ``noise``, mix linearly, decode. ``[F, B, ...]``.

    ``x_a`` and ``x_b`` are images; in a latent run their latents are noised and mixed (``noise`` is of the
    latent shape).
    """
    process = run.process
    t_start = noised_step(t, process)
    x_a, x_b = run.encode(x_a), run.encode(x_b)
    if t_start <= process.t_data:
        x_ta, x_tb = x_a, x_b
    else:
        tt, shape = as_batch(x_a, t_start, process), (-1, *[1] * (x_a.ndim - 1))
        alpha, sigma = process.alpha(tt).reshape(shape), process.sigma(tt).reshape(shape)
        x_ta, x_tb = alpha * x_a + sigma * noise, alpha * x_b + sigma * noise  # eq. 4
    starts = [(1 - lam) * x_ta + lam * x_tb for lam in lams]
    return decode_frames(run, starts, t_start, generator, labels=labels, **sample_kw)


@sampling_task
def interpolate(
    run,
    out_dir: Path,
    *,
    sampling: SamplingOptions,
    mode: Literal["latent", "slerp"] = "latent",
    frames: int = 8,
    t: float = 0.5,
    seeds: list[int] = [0, 1],
    rows: int = 1,
    latents: str | None = None,
    indices: list[int] = [0, 1], split: Literal["train", "test"] = "test", images: list[str] = [],
    label: int | None = None,
) -> TaskResult:
    """Interpolate between two images or two seeds; write ``interpolation.png`` (a row per pair) and ``.gif``.

    The sampler defaults to the recipe's for ``latent``; for ``slerp`` to DDIM
    with eta = 0, deterministic, so the frames differ through their start
    noise. ``seed`` seeds the sampler noise shared by all frames, and
    ``latent``'s forward noise.

    Args:
        mode: ``latent``: between images, noised to step t, mixed, decoded
            (Ho et al. sec. 4.3); ``slerp``: spherical interpolation of two
            start noises x_T drawn from ``seeds``.
        frames: interpolation frames, lambda = 0, 1/(frames-1), ..., 1.
        t: ``latent`` mode: how far to noise the images, a fraction of the way
            to the noisiest time (on the discrete chain of the T steps: 0.5 is
            Ho et al.'s t = 500 of 1000; 0 mixes the pixels).
            Smaller t reconstructs the inputs at the end frames, larger t
            makes new images (see the module's doc; 28x28 images want about 0.2).
        seeds: ``slerp`` mode: the seeds of the two start noises.
        rows: ``slerp`` mode: pairs of start noises (one row each).
        latents: ``slerp`` mode: a ``latents.pt`` written by ``invert`` whose
            latents, in pairs (0, 1), (2, 3), ..., are the end points instead of
            ``seeds`` (one row per pair); decode with ``sampler = "ddim"`` and the
            inversion's ``steps`` to
            get the inverted images back at lambda = 0 and 1.
        indices: ``latent`` mode: data-set positions, taken in pairs (a, b, a, b, ...).
        split: the data split the indices refer to.
        images: ``latent`` mode: image files (in pairs) instead of data-set images.
        label: class for a conditional model (default: ``latent`` uses each
            pair's labels, a's up to lambda = 0.5 and b's after; ``slerp`` none).
    """
    lams, out_dir = lambdas(frames), Path(out_dir)
    generator = run.generator(sampling.seed)
    files = []
    if mode == "slerp":
        if latents:
            z = load_latents(latents).to(run.device)
            if z.shape[0] < 2 or z.shape[0] % 2 or tuple(z.shape[1:]) != tuple(run.latent_shape):
                raise ValueError(f"{latents}: slerp takes latents in pairs of the model's shape "
                                 f"{tuple(run.latent_shape)}, got {tuple(z.shape)}")
            z_a, z_b, rows = z[0::2], z[1::2], z.shape[0] // 2
        elif len(seeds) != 2 or rows < 1:
            raise ValueError(f"slerp needs two seeds and rows >= 1, got seeds = {seeds}, rows = {rows}")
        else:
            z_a, z_b = (run.noise(rows, run.generator(s)) for s in seeds)
        y = class_labels(run, rows, label)
        if sampling.sampler is None:
            sampling = replace(sampling, sampler=DETERMINISTIC[0],
                               sampler_options={**DETERMINISTIC[1], **sampling.sampler_options})
        out = decode_frames(run, [slerp(z_a, z_b, lam) for lam in lams], run.process.t_max,
                            generator, labels=None if y is None else [y] * frames, sampling=sampling)
    else:
        if len(images or indices) % 2:
            raise ValueError(f"latent interpolation takes images in pairs; got {len(images or indices)}")
        x, y = load_inputs(run, indices=indices, split=split, images=images, label=label)
        x_a, x_b = x[0::2], x[1::2]
        noise = torch.randn((x_a.shape[0], *run.latent_shape), generator=generator, device=x_a.device,
                            dtype=x_a.dtype)
        per_frame = None if y is None else [y[0::2] if lam < 0.5 else y[1::2] for lam in lams]
        out = interpolate_latent(run, x_a, x_b, lams, t, noise=noise, generator=generator, labels=per_frame,
                                 sampling=sampling)
        files.append(save_grid(torch.stack([x_a, x_b], 1).flatten(0, 1), out_dir / "inputs.png", nrow=2))
    files.append(save_strip(out, out_dir / "interpolation.png"))
    caps = [f"{k + 1}/{frames}: lambda = {lam:.3f}" for k, lam in enumerate(lams)]
    files.append(save_gif(list(out), caps, out_dir / "interpolation.gif"))
    return TaskResult(files=files)
