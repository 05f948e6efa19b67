"""Ancestral sampling of Ho et al. (2020), Algorithm 2, on any process."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from gentool import DenoiseFn, Process, Spacing, StepCallback, ancestral_step, data_time, reverse_loop


@torch.no_grad()
def ancestral(
    denoise: DenoiseFn, process: Process, x_T: Tensor, *, steps: int | None = None, t_start: float | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
    variance: Literal["beta", "beta_tilde"] = "beta",
    clip_denoised: bool = True,
    spacing: Spacing = "uniform",
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2).

    Each step draws x_s ~ N(mu-tilde(x_t, x0_hat), sigma^2 I) from the
    Gaussian posterior q(x_s | x_t, x0) at the predicted x0 (eqs. 7 and 11).
    With fewer ``steps`` than T the same formulas run on the respaced chain
    beta_{t->s} = 1 - abar_t / abar_s (as in improved-diffusion's respacing);
    on a continuous process, between the times of its uniform grid (in alpha
    and sigma: beta_{t->s} = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2).

    Args:
        variance: sigma_t^2 = ``"beta"`` (beta_t, Ho et al.'s default) or
            ``"beta_tilde"`` (the posterior variance, eq. 7). A model with a learned
            variance (the ``hybrid`` objective) uses its own instead: its v
            interpolates between the step's log beta and log beta-tilde.
        clip_denoised: clip the predicted x0 to [-1, 1] before forming the mean.
        spacing: where the ``steps`` times go: ``"uniform"`` (evenly in t: Ho et al.'s
            chain and its respacing), ``"trailing"``, ``"logsnr"`` or ``"karras"`` (the
            natural grid of a process whose time is sigma, such as EDM's).
    """
    def step(i: int, t, s, x: Tensor) -> tuple[Tensor, Tensor]:
        return ancestral_step(denoise, process, x, t, s, generator=generator, variance=variance,
                              clip_denoised=clip_denoised)

    return reverse_loop(list(process.grid(steps, t_start, spacing)), x_T, step, callback, data_time(process))
