"""Ancestral sampling of Ho et al. (2020), Algorithm 2."""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

from gentool.diffusion import Diffusion


def abar(diffusion: Diffusion, t: int) -> float:
    """alpha-bar at 0-based step ``t``; ``t = -1`` (the data, x_0) gives 1."""
    return 1.0 if t < 0 else float(diffusion.alphas_cumprod_64[t])


@torch.no_grad()
def ancestral(
    eps_fn: Callable[[Tensor, Tensor], Tensor],
    diffusion: Diffusion,
    x_T: Tensor,
    *,
    steps: int | None = None,
    t_start: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], Tensor | None] | None = None,
    variance: Literal["beta", "beta_tilde"] = "beta",
    clip_denoised: bool = True,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2).

    Each step draws x_{s} ~ N(mu-tilde(x_t, x0_hat), sigma^2 I) from the
    Gaussian posterior at the predicted x0 (eqs. 7 and 11). With fewer
    ``steps`` than T the same formulas run on the respaced schedule
    beta_{t->s} = 1 - abar_t / abar_s (as in improved-diffusion's respacing).

    Args:
        variance: sigma_t^2 = ``"beta"`` (beta_t, Ho et al.'s default) or
            ``"beta_tilde"`` (the posterior variance, eq. 7).
        clip_denoised: clip the predicted x0 to [-1, 1] before forming the mean.
    """
    ts = diffusion.timesteps(steps, t_start)
    x = x_T
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        a_t, a_s = abar(diffusion, t), abar(diffusion, s)
        beta = 1.0 - a_t / a_s  # beta of the (possibly respaced) step t -> s
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_fn(x, tt)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        # posterior mean, eq. 7, with abar_{t-1} replaced by abar_s
        mean = (a_s**0.5 * beta / (1 - a_t)) * x0 + ((1 - beta) ** 0.5 * (1 - a_s) / (1 - a_t)) * x
        if s >= 0:
            var = beta if variance == "beta" else beta * (1 - a_s) / (1 - a_t)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = mean + var**0.5 * noise
        else:
            x = mean  # the last step adds no noise (z = 0 at t = 1)
        if callback is not None:
            replaced = callback({"i": i, "t": t, "t_next": s, "x": x, "x0": x0})
            if replaced is not None:
                x = replaced
    return x
