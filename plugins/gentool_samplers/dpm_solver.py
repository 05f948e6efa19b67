"""DPM-Solver++(2M) of Lu et al. (2022): a second-order multistep ODE solver in log-SNR, for any process."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool import DenoiseFn, Process, Spacing, StepCallback, coefficients, data_time, denoise_at, reverse_loop


@torch.no_grad()
def dpmpp_2m(
    denoise: DenoiseFn, process: Process, x_T: Tensor, *, steps: int | None = None, t_start: float | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
    clip_denoised: bool = True,
    spacing: Spacing = "logsnr",
    lambda_min: float | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): usable samples in 10-25 steps.

    Solves the diffusion ODE in the data-prediction form with the process's
    alpha_t and sigma_t, lambda_t = log(alpha_t / sigma_t) (half the log-SNR)
    and h = lambda_s - lambda_t. The first step is first order (DDIM):
    x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) x0_t; later steps use
    D = (1 + 1 / (2r)) x0_t - 1 / (2r) x0_prev with r = h_prev / h in place of x0_t.
    The last step returns the denoised x0 (as k-diffusion does). Deterministic:
    ``generator`` is accepted for the shared convention and never used.

    Args:
        clip_denoised: clip each predicted x0 to [-1, 1] before it enters the update.
        spacing: where the ``steps`` times go: ``"logsnr"`` (evenly in
            lambda, Lu et al.'s choice for low-resolution images),
            ``"karras"`` (Karras et al. 2022, eq. 5, rho = 7), ``"uniform"``
            (evenly in t) or ``"trailing"`` (Lin et al. 2024).
        lambda_min: ``logsnr`` and ``karras`` spread the steps over lambda (the
            half log-SNR) from max(lambda_{t_start}, lambda_min) to the
            process's low-noise end; the first step stays at t_start. Unset:
            -5.1 where the process's noisy end is an outlier (the cosine
            schedule's clipped beta, zero terminal SNR's or flow matching's
            -inf), which would otherwise bunch the steps at the end, and no
            clip for smooth schedules; ``-inf`` turns the clip off.
    """
    prev: dict[str, float | Tensor] = {}  # x0 and h of the previous step
    end = data_time(process)

    def step(i: int, t, s, x: Tensor) -> tuple[Tensor, Tensor]:
        x0 = denoise_at(denoise, x, t, clip_denoised=clip_denoised).x0
        if s == end:
            return x0, x0  # sigma_s = 0: the ODE's end point is the denoised image
        _, sigma_t = coefficients(process, t)
        alpha_s, sigma_s = coefficients(process, s)
        h = (float(process.log_snr(s)) - float(process.log_snr(t))) / 2  # inf from alpha_t = 0: a DDIM step to x0
        d = x0
        if prev:
            r = prev["h"] / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev["x0"]  # Lu et al. 2022b, Alg. 2
        prev.update(x0=x0, h=h)
        return (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * d, x0

    log_snr_min = None if lambda_min is None else 2 * lambda_min
    ts = list(process.grid(steps, t_start, spacing, log_snr_min=log_snr_min))
    return reverse_loop(ts, x_T, step, callback, end)

