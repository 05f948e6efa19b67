"""Denoising diffusion implicit models (Song et al. 2020), on a respaced subsequence."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from gentool.diffusion import Diffusion
from gentool_samplers.ancestral import abar


@torch.no_grad()
def ddim(
    eps_fn: Callable[[Tensor, Tensor], Tensor],
    diffusion: Diffusion,
    x_T: Tensor,
    *,
    steps: int | None = None,
    t_start: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], Tensor | None] | None = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
) -> Tensor:
    """DDIM sampling (Song et al. 2020, eq. 12) on ``steps`` evenly spaced timesteps.

    Each step goes from timestep t to the next one s of the subsequence
    (``Diffusion.timesteps``), whatever the spacing:
    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s) (eq. 16).
    eta = 0 is deterministic; eta = 1 over all T steps is DDPM with the
    posterior variance beta-tilde.

    Args:
        eta: stochasticity: 0 (deterministic DDIM) to 1 (DDPM-like noise).
        clip_denoised: clip the predicted x0 to [-1, 1] (eps is then re-derived from it).
    """
    if eta < 0:
        raise ValueError(f"eta must not be negative, got {eta}")
    ts = diffusion.timesteps(steps, t_start)
    x = x_T
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1  # -1: the data, abar = 1
        a_t, a_s = abar(diffusion, t), abar(diffusion, s)
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_fn(x, tt)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5  # eq. 16
        x = a_s**0.5 * x0 + max(1 - a_s - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if callback is not None:
            replaced = callback({"i": i, "t": t, "t_next": s, "x": x, "x0": x0})
            if replaced is not None:
                x = replaced
    return x
