"""DPM-Solver++(2M) of Lu et al. (2022): a second-order multistep ODE solver."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool.diffusion import Diffusion
from gentool.interfaces import EpsFn, StepCallback
from gentool.reverse import Spacing, abar, log_snr_half, predict, reverse_loop, spaced_timesteps


@torch.no_grad()
def dpmpp_2m(
    eps_fn: EpsFn, diffusion: Diffusion, x_T: Tensor, *, steps: int | None = None, t_start: int | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
    clip_denoised: bool = True,
    spacing: Spacing = "logsnr",
    lambda_min: float | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): usable samples in 10-25 steps.

    Solves the diffusion ODE in the data-prediction form with
    alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t)
    and h = lambda_s - lambda_t. The first step is first order (DDIM):
    x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) x0_t; later steps use
    D = (1 + 1 / (2r)) x0_t - 1 / (2r) x0_prev with r = h_prev / h in place of x0_t.
    The last step returns the denoised x0 (as k-diffusion does). Deterministic:
    ``generator`` is accepted for the shared convention and never used.

    Args:
        clip_denoised: clip each predicted x0 to [-1, 1] before it enters the update.
        spacing: where the ``steps`` timesteps go: ``"logsnr"`` (evenly in
            lambda, Lu et al.'s choice for low-resolution images),
            ``"karras"`` (Karras et al. 2022, eq. 5, rho = 7), ``"uniform"``
            (evenly in t, ``Diffusion.timesteps``) or ``"trailing"`` (Lin et al. 2024).
        lambda_min: ``logsnr`` and ``karras`` spread the steps over lambda from
            max(lambda_{t_start}, lambda_min) to lambda_0; the first step stays
            at t_start. Unset: -5.1 where the schedule's last lambda is an
            outlier (the cosine schedule's clipped beta, zero terminal SNR's
            -inf), which would otherwise bunch the steps at the end, and no
            clip for smooth schedules; ``-inf`` turns the clip off.
    """
    prev: dict[str, float | Tensor] = {}  # x0 and h of the previous step

    def step(i: int, t: int, s: int, x: Tensor) -> tuple[Tensor, Tensor]:
        a_t, a_s = abar(diffusion, t), abar(diffusion, s)
        _, x0 = predict(eps_fn, diffusion, x, t, clip_denoised=clip_denoised)
        if s < 0:
            return x0, x0  # sigma_s = 0: the ODE's end point is the denoised image
        h = log_snr_half(a_s) - log_snr_half(a_t)  # inf from abar_t = 0: e^{-h} = 0, a DDIM step to x0
        d = x0
        if prev:
            r = prev["h"] / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev["x0"]  # Lu et al. 2022b, Alg. 2
        prev.update(x0=x0, h=h)
        return ((1 - a_s) / (1 - a_t)) ** 0.5 * x - a_s**0.5 * math.expm1(-h) * d, x0

    ts = spaced_timesteps(diffusion, steps, t_start, spacing, lambda_min=lambda_min)
    return reverse_loop(ts, x_T, step, callback)
