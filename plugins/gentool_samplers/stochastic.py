"""Stochastic samplers of k-diffusion (Crowson) on any process: Euler-ancestral and DPM-Solver++(2M) SDE.

Both work in Karras et al.'s variables, y = x_t / alpha(t) and sigma_k = sigma(t) /
alpha(t) (k-diffusion's x and sigma), and map back with x = alpha y; so a
step from infinite noise (alpha = 0: flow matching's t = 1, zero terminal SNR)
stays finite, and on the ``edm`` and ``ve`` processes (alpha = 1) they are
k-diffusion's functions as written.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool import (DenoiseFn, Process, Spacing, StepCallback, coefficients, data_time, denoise_at, karras_sigma,
                     reverse_loop)


def ancestral_sigmas(sigma_from: float, sigma_to: float, eta: float) -> tuple[float, float]:
    """k-diffusion's get_ancestral_step: (sigma_down, sigma_up) with sigma_down^2 + sigma_up^2 = sigma_to^2.

    sigma_up = min(sigma_to, eta sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2)), written with
    sigma_to / sigma_from so that sigma_from = inf gives sigma_up = min(1, eta) sigma_to.
    """
    if not eta:
        return sigma_to, 0.0
    ratio = sigma_to / sigma_from if math.isfinite(sigma_from) else 0.0
    up = min(sigma_to, eta * sigma_to * math.sqrt(max(1.0 - ratio**2, 0.0)))
    return math.sqrt(max(sigma_to**2 - up**2, 0.0)), up


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@torch.no_grad()
def euler_ancestral(
    denoise: DenoiseFn, process: Process, x_T: Tensor, *, steps: int | None = None, t_start: float | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    spacing: Spacing = "karras",
) -> Tensor:
    """Ancestral sampling with Euler steps (k-diffusion's sample_euler_ancestral), on any process.

    From sigma_t to sigma_s (Karras' sigma = sigma / alpha): an Euler step of the
    probability-flow ODE down to sigma_down, y = x0_hat + sigma_down eps_hat, then
    fresh noise of std sigma_up, sigma_down^2 + sigma_up^2 = sigma_s^2 with
    sigma_up = eta sigma_s sqrt(1 - sigma_s^2 / sigma_t^2) (the DDPM posterior's
    noise for eta = 1); x_s = alpha_s y. The last step returns x0_hat.

    Args:
        eta: the share of the step's noise that is fresh: 0 is deterministic (Euler), 1 ancestral.
        s_noise: the scale of the fresh noise (k-diffusion's s_noise).
        spacing: where the ``steps`` times go: ``"karras"`` (eq. 5, rho = 7),
            ``"logsnr"``, ``"uniform"`` or ``"trailing"``.
    """
    if eta < 0:
        raise ValueError(f"eta must not be negative, got {eta}")
    end = data_time(process)

    def step(i: int, t, s, x: Tensor) -> tuple[Tensor, Tensor]:
        d = denoise_at(denoise, x, t)
        if s == end:
            return d.x0, d.x0
        down, up = ancestral_sigmas(karras_sigma(process, t), karras_sigma(process, s), eta)
        y = d.x0 + down * d.eps  # y_t + (sigma_down - sigma_t) eps_hat
        if up > 0:
            y = y + s_noise * up * _noise(x, generator)
        return coefficients(process, s)[0] * y, d.x0

    return reverse_loop(list(process.grid(steps, t_start, spacing)), x_T, step, callback, end)


@torch.no_grad()
def dpmpp_2m_sde(
    denoise: DenoiseFn, process: Process, x_T: Tensor, *, steps: int | None = None, t_start: float | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    spacing: Spacing = "karras",
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's sample_dpmpp_2m_sde, midpoint variant), on any process.

    With h = lambda_s - lambda_t (half log-SNRs: -ln of Karras' sigma) and x0_hat
    the denoised image, each step is
    x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s (1 - e^{-(1 + eta) h}) x0_hat
    + sigma_s sqrt(1 - e^{-2 eta h}) s_noise z, plus, after the first step, the
    second-order term alpha_s (1 - e^{-(1 + eta) h}) (x0_hat - x0_prev) / (2 r)
    with r = h_prev / h. eta = 0 is DPM-Solver++(2M) (deterministic, ``dpmpp_2m``
    with a first-order last step); the last step returns x0_hat. The noise is
    drawn from ``generator`` (k-diffusion's default is a Brownian tree).

    Args:
        eta: the stochasticity: 1 is the SDE, 0 the ODE.
        s_noise: the scale of the added noise.
        spacing: where the ``steps`` times go: ``"karras"`` (eq. 5, rho = 7),
            ``"logsnr"``, ``"uniform"`` or ``"trailing"``.
    """
    if eta < 0:
        raise ValueError(f"eta must not be negative, got {eta}")
    end = data_time(process)
    prev: dict[str, float | Tensor] = {}

    def step(i: int, t, s, x: Tensor) -> tuple[Tensor, Tensor]:
        x0 = denoise_at(denoise, x, t).x0
        if s == end:
            return x0, x0
        _, sigma_t = coefficients(process, t)
        alpha_s, sigma_s = coefficients(process, s)
        h = (float(process.log_snr(s)) - float(process.log_snr(t))) / 2  # inf from alpha_t = 0
        eta_h = eta * h if eta else 0.0
        decay = -math.expm1(-h - eta_h)  # 1 - e^{-(1 + eta) h}
        out = (sigma_s / sigma_t) * math.exp(-eta_h) * x + alpha_s * decay * x0
        if prev:
            r = prev["h"] / h
            out = out + 0.5 * alpha_s * decay * (1 / r) * (x0 - prev["x0"])
        if eta:
            out = out + sigma_s * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise * _noise(x, generator)
        prev.update(x0=x0, h=h)
        return out, x0

    return reverse_loop(list(process.grid(steps, t_start, spacing)), x_T, step, callback, end)
