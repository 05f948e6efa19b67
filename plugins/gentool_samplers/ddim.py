"""Denoising diffusion implicit models (Song et al. 2020), on a respaced subsequence."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool.diffusion import Diffusion
from gentool.interfaces import EpsFn, StepCallback
from gentool.reverse import Spacing, abar, ddim_step, predict, reverse_loop, spaced_timesteps
from gentool.vlb import interpolate_log_variance, last_variance


@torch.no_grad()
def ddim(
    eps_fn: EpsFn, diffusion: Diffusion, x_T: Tensor, *, steps: int | None = None, t_start: int | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
    spacing: Spacing = "uniform",
) -> Tensor:
    """DDIM sampling (Song et al. 2020, eq. 12) on a respaced subsequence of ``steps`` timesteps.

    Each step goes from timestep t to the next one s of the subsequence,
    whatever the spacing:
    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s) (eq. 16).
    eta = 0 is deterministic; eta = 1 over all T steps is DDPM with the
    posterior variance beta-tilde.

    Args:
        eta: stochasticity: 0 (deterministic DDIM) to 1 (DDPM-like noise). With
            a learned variance (the ``hybrid`` objective) sigma^2 = eta^2 times
            the model's variance of the step, at most 1 - abar_s.
        clip_denoised: clip the predicted x0 to [-1, 1] (eps is then re-derived from it).
        spacing: where the ``steps`` timesteps go: ``"uniform"`` (evenly in t,
            from t_start to 0), ``"trailing"`` (Lin et al. 2024: from t_start,
            ending at T/steps - 1), ``"logsnr"`` or ``"karras"`` (Karras et al.
            2022, eq. 5).
    """
    if eta < 0:
        raise ValueError(f"eta must not be negative, got {eta}")

    def step(i: int, t: int, s: int, x: Tensor) -> tuple[Tensor, Tensor]:
        a_t, a_s = abar(diffusion, t), abar(diffusion, s)  # s = -1: the data, abar = 1
        eps, x0 = predict(eps_fn, diffusion, x, t, clip_denoised=clip_denoised)
        if clip_denoised:
            eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5  # eq. 16
        v = last_variance(eps_fn)
        if v is not None and sigma > 0:  # learned: eta^2 Sigma_theta (Nichol and Dhariwal eq. 15), per pixel
            beta = 1 - a_t / a_s
            var = interpolate_log_variance(math.log(beta), math.log(beta * (1 - a_s) / (1 - a_t)), v).exp()
            var = (eta**2 * var).clamp(max=1 - a_s)
            x = a_s**0.5 * x0 + (1 - a_s - var).clamp(min=0).sqrt() * eps  # eq. 12
            return x + var.sqrt() * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype), x0
        x = ddim_step(x0, eps, a_s, sigma)
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x, x0

    return reverse_loop(spaced_timesteps(diffusion, steps, t_start, spacing), x_T, step, callback)
