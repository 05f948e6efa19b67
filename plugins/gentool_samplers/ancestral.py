"""Ancestral sampling of Ho et al. (2020), Algorithm 2."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from gentool.diffusion import Diffusion
from gentool.interfaces import EpsFn, StepCallback
from gentool.reverse import abar, posterior_step, predict, reverse_loop
from gentool.vlb import interpolate_log_variance, last_variance


@torch.no_grad()
def ancestral(
    eps_fn: EpsFn, diffusion: Diffusion, x_T: Tensor, *, steps: int | None = None, t_start: int | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
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
            ``"beta_tilde"`` (the posterior variance, eq. 7). A model with a learned
            variance (the ``hybrid`` objective) uses its own instead: its v
            interpolates between the step's log beta and log beta-tilde.
        clip_denoised: clip the predicted x0 to [-1, 1] before forming the mean.
    """

    def step(i: int, t: int, s: int, x: Tensor) -> tuple[Tensor, Tensor]:
        a_t, a_s = abar(diffusion, t), abar(diffusion, s)
        _, x0 = predict(eps_fn, diffusion, x, t, clip_denoised=clip_denoised)
        mean, beta = posterior_step(x, x0, a_t, a_s)
        if s < 0:
            return mean, x0  # the last step adds no noise (z = 0 at t = 1)
        var = beta if variance == "beta" else beta * (1 - a_s) / (1 - a_t)
        v = last_variance(eps_fn)
        if v is not None:  # Nichol and Dhariwal 2021, eq. 15, on the respaced step t -> s
            var = interpolate_log_variance(math.log(beta), math.log(beta * (1 - a_s) / (1 - a_t)), v).exp()
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return mean + var**0.5 * noise, x0

    return reverse_loop(diffusion.timesteps(steps, t_start), x_T, step, callback)
