"""Euler and Heun samplers of Karras et al. (2022), Algorithms 1 and 2, on any process.

In Karras et al.'s noise level sigma_k = sigma(t) / alpha(t) and y = x_t / alpha(t)
the probability-flow ODE is dy/dsigma_k = eps_hat(x_t, t) (eq. 4 with D = x0_hat).
An Euler step in these variables is y_s = x0_hat + sigma_k,s eps_hat, i.e.
x_s = alpha_s x0_hat + sigma_s eps_hat, which stays finite from sigma_k = inf
(alpha = 0: zero terminal SNR, flow matching's t = 1). On the discrete chain
every time is one of the trained steps (the network only knows integer t) and
``spacing = "karras"`` places them by eq. 5.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool import DenoiseFn, Process, StepCallback
from gentool import (Spacing, churn_time, coefficients, data_time, ddim_update, denoise_at, karras_sigma,
                     reverse_loop)


def karras_sampler(denoise, process, x_T, *, steps, t_start, generator, callback, spacing, second_order,
                   s_churn, s_tmin, s_tmax, s_noise) -> Tensor:
    """Karras et al. (2022), Algorithm 2 (Algorithm 1 when s_churn = 0), first or second order."""
    ts = list(process.grid(steps, t_start, spacing))
    gamma_max = min(s_churn / len(ts), math.sqrt(2) - 1)
    end = data_time(process)

    def step(i: int, t, s, x: Tensor) -> tuple[Tensor, Tensor]:
        sig_t = karras_sigma(process, t)
        if gamma_max > 0 and s_tmin <= sig_t <= s_tmax and math.isfinite(sig_t):
            t_hat = churn_time(process, t, gamma_max)  # raise the noise level to sigma_hat
            sig_hat = karras_sigma(process, t_hat)
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            y = x / coefficients(process, t)[0] + s_noise * (sig_hat**2 - sig_t**2) ** 0.5 * z
            t, sig_t = t_hat, sig_hat
            x = y * coefficients(process, t)[0]
        alpha_s, sigma_s = coefficients(process, s)
        d = denoise_at(denoise, x, t)
        x_next = ddim_update(d.x0, d.eps, alpha_s, sigma_s)  # Euler: y_s = y_t + (sigma_s - sigma_t) eps = x0 + sigma_s eps
        if second_order and s != end and math.isfinite(sig_t):
            eps_s = denoise(x_next, s).eps
            y_t, sig_s = x / coefficients(process, t)[0], karras_sigma(process, s)
            x_next = (y_t + (sig_s - sig_t) * (d.eps + eps_s) / 2) * alpha_s  # Heun's correction
        return x_next, d.x0

    return reverse_loop(ts, x_T, step, callback, end)


#: The options of :func:`euler` and :func:`heun`, documented once and appended to both docstrings.
KARRAS_ARGS = """
    Args:
        spacing: where the ``steps`` times go: ``"karras"`` (eq. 5, rho = 7),
            ``"logsnr"``, ``"uniform"`` or ``"trailing"``.
        s_churn: S_churn, the total churn: gamma = min(S_churn / steps, sqrt(2) - 1).
        s_tmin: S_tmin, churn only where sigma_t >= s_tmin (Karras' sigma = sigma / alpha).
        s_tmax: S_tmax, churn only where sigma_t <= s_tmax (inf: no upper limit).
        s_noise: S_noise, the scale of the added noise (slightly above 1 offsets detail loss).
"""


def karras_args(sampler):
    """Append :data:`KARRAS_ARGS` to ``sampler``'s docstring (its ``Args:`` block, read by the docs and options)."""
    sampler.__doc__ += KARRAS_ARGS
    return sampler


@torch.no_grad()
@karras_args
def euler(denoise: DenoiseFn, process: Process, x_T: Tensor, *, steps: int | None = None,
          t_start: float | None = None, generator: torch.Generator | None = None,
          callback: StepCallback | None = None, spacing: Spacing = "karras",
          s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Euler's method in sigma (Karras et al. 2022, Algorithm 2 without the second-order correction).

    One network evaluation per step: y_s = y_t + (sigma_s - sigma_t) eps_hat.
    With ``s_churn = 0`` it is deterministic (DDIM, eta = 0, on the same
    times); with churn each step first raises the noise from sigma_t to
    sigma_hat = sigma_t (1 + gamma) (snapped to a trained step on the
    discrete chain) by adding fresh noise.
    """
    return karras_sampler(denoise, process, x_T, steps=steps, t_start=t_start, generator=generator,
                          callback=callback, spacing=spacing, second_order=False, s_churn=s_churn,
                          s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


@torch.no_grad()
@karras_args
def heun(denoise: DenoiseFn, process: Process, x_T: Tensor, *, steps: int | None = None,
         t_start: float | None = None, generator: torch.Generator | None = None,
         callback: StepCallback | None = None, spacing: Spacing = "karras",
         s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 2; Algorithm 1 when ``s_churn = 0``).

    An Euler step to sigma_s, then the average of the slopes at both ends:
    y_s = y_t + (sigma_s - sigma_t) (eps_hat(t) + eps_hat(s)) / 2; two network
    evaluations per step, one on the last step (to the data) and on a step
    from infinite noise (sigma_t = inf).
    """
    return karras_sampler(denoise, process, x_T, steps=steps, t_start=t_start, generator=generator,
                          callback=callback, spacing=spacing, second_order=True, s_churn=s_churn,
                          s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
