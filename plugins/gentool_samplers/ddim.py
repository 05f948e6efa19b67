"""Denoising diffusion implicit models (Song et al. 2020), on a respaced grid of any process."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool import (
    DenoiseFn, Process, Spacing, StepCallback, coefficients, data_time, ddim_update, denoise_at,
    interpolate_log_variance, posterior, reverse_loop,
)


@torch.no_grad()
def ddim(
    denoise: DenoiseFn, process: Process, x_T: Tensor, *, steps: int | None = None, t_start: float | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
    spacing: Spacing = "uniform",
) -> Tensor:
    """DDIM sampling (Song et al. 2020, eq. 12) on a respaced grid of ``steps`` times.

    Each step goes from time t to the next one s of the grid, whatever the spacing:
    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - s^2) eps_hat + s z, with
    s^2 = eta^2 times the posterior variance of the step, which on the discrete
    chain is eq. 16: eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s).
    eta = 0 is deterministic (the probability-flow ODE's first-order solver;
    on flow matching's linear path it is Euler's method); eta = 1 over all T
    steps is DDPM with the posterior variance beta-tilde.

    Args:
        eta: stochasticity: 0 (deterministic DDIM) to 1 (DDPM-like noise). With
            a learned variance (the ``hybrid`` objective) s^2 = eta^2 times
            the model's variance of the step, at most sigma_s^2.
        clip_denoised: clip the predicted x0 to [-1, 1] (eps is then re-derived from it).
        spacing: where the ``steps`` times go: ``"uniform"`` (evenly in t,
            from t_start to the data), ``"trailing"`` (Lin et al. 2024: from t_start,
            ending at T/steps - 1), ``"logsnr"`` or ``"karras"`` (Karras et al.
            2022, eq. 5).
    """
    if eta < 0:
        raise ValueError(f"eta must not be negative, got {eta}")

    def step(i: int, t, s, x: Tensor) -> tuple[Tensor, Tensor]:
        alpha_t, sigma_t = coefficients(process, t)
        alpha_s, sigma_s = coefficients(process, s)
        d = denoise_at(denoise, x, t, clip_denoised=clip_denoised)
        x0, eps = d.x0, d.eps
        if clip_denoised:
            eps = (x - alpha_t * x0) / sigma_t
        _, _, var_upper, var_lower = posterior(process, t, s)
        noise_std = eta * var_lower**0.5  # eq. 16
        v = d.extras.get("variance_v")
        if v is not None and noise_std > 0:  # learned: eta^2 Sigma_theta (Nichol and Dhariwal eq. 15), per pixel
            var = interpolate_log_variance(math.log(var_upper), math.log(var_lower), v).exp()
            var = (eta**2 * var).clamp(max=sigma_s**2)
            x = alpha_s * x0 + (sigma_s**2 - var).clamp(min=0).sqrt() * eps  # eq. 12
            return x + var.sqrt() * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype), x0
        x = ddim_update(x0, eps, alpha_s, sigma_s, noise_std)
        if noise_std > 0:
            x = x + noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x, x0

    return reverse_loop(list(process.grid(steps, t_start, spacing)), x_T, step, callback, data_time(process))
