"""Euler and Heun samplers of Karras et al. (2022) on any discrete-time gentool model.

In sigma_t = sqrt((1 - abar_t) / abar_t) and y = x_t / sqrt(abar_t) the
probability-flow ODE is dy/dsigma = eps_hat(x_t, t) (Karras et al. 2022,
eq. 4 with D = x0_hat). Every sigma is one of the trained timesteps (the
network only knows integer t); ``spacing = "karras"`` places them by eq. 5.
An Euler step in these variables is y_s = x0_hat + sigma_s eps_hat, i.e.
x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_hat, which stays finite from
sigma_t = inf (zero terminal SNR).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool.diffusion import Diffusion
from gentool.interfaces import EpsFn, StepCallback
from gentool.reverse import (Spacing, abar, ddim_step, lambdas, predict, reverse_loop, sigma_of,
                             spaced_timesteps)


def churn_timestep(diffusion: Diffusion, t: int, gamma: float) -> int:
    """The trained timestep t_hat >= t whose sigma is nearest sigma_t (1 + gamma), in log sigma."""
    lam = lambdas(diffusion)
    target = float(lam[t]) - math.log1p(gamma)  # lambda = -log sigma
    finite = torch.isfinite(lam[t:])  # never onto abar = 0
    return t + int(torch.where(finite, (lam[t:] - target).abs(), math.inf).argmin())


def karras_sampler(eps_fn, diffusion, x_T, *, steps, t_start, generator, callback, spacing, second_order,
                   s_churn, s_tmin, s_tmax, s_noise) -> Tensor:
    """Karras et al. (2022), Algorithm 2 (Algorithm 1 when s_churn = 0), first or second order."""
    ts = spaced_timesteps(diffusion, steps, t_start, spacing)
    gamma_max = min(s_churn / len(ts), math.sqrt(2) - 1)

    def step(i: int, t: int, s: int, x: Tensor) -> tuple[Tensor, Tensor]:
        sig_t, a_s = sigma_of(abar(diffusion, t)), abar(diffusion, s)
        if gamma_max > 0 and s_tmin <= sig_t <= s_tmax and math.isfinite(sig_t):
            t_hat = churn_timestep(diffusion, t, gamma_max)  # raise the noise level to sigma_hat
            sig_hat = sigma_of(abar(diffusion, t_hat))
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            y = x / abar(diffusion, t) ** 0.5 + s_noise * (sig_hat**2 - sig_t**2) ** 0.5 * z
            t, sig_t = t_hat, sig_hat
            x = y * abar(diffusion, t) ** 0.5
        eps, x0 = predict(eps_fn, diffusion, x, t)
        x_next = ddim_step(x0, eps, a_s)  # Euler: y_s = y_t + (sigma_s - sigma_t) eps = x0 + sigma_s eps
        if second_order and s >= 0 and math.isfinite(sig_t):
            eps_s, _ = predict(eps_fn, diffusion, x_next, s)
            y_t, sig_s = x / abar(diffusion, t) ** 0.5, sigma_of(a_s)
            x_next = (y_t + (sig_s - sig_t) * (eps + eps_s) / 2) * a_s**0.5  # Heun's correction
        return x_next, x0

    return reverse_loop(ts, x_T, step, callback)


#: The options of :func:`euler` and :func:`heun`, documented once and appended to both docstrings.
KARRAS_ARGS = """
    Args:
        spacing: where the ``steps`` timesteps go: ``"karras"`` (eq. 5, rho = 7),
            ``"logsnr"``, ``"uniform"`` or ``"trailing"``.
        s_churn: S_churn, the total churn: gamma = min(S_churn / steps, sqrt(2) - 1).
        s_tmin: S_tmin, churn only where sigma_t >= s_tmin.
        s_tmax: S_tmax, churn only where sigma_t <= s_tmax.
        s_noise: S_noise, the scale of the added noise (slightly above 1 offsets detail loss).
"""


def karras_args(sampler):
    """Append :data:`KARRAS_ARGS` to ``sampler``'s docstring (its ``Args:`` block, read by the docs and options)."""
    sampler.__doc__ += KARRAS_ARGS
    return sampler


@torch.no_grad()
@karras_args
def euler(eps_fn: EpsFn, diffusion: Diffusion, x_T: Tensor, *, steps: int | None = None, t_start: int | None = None,
          generator: torch.Generator | None = None, callback: StepCallback | None = None, spacing: Spacing = "karras",
          s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Euler's method in sigma (Karras et al. 2022, Algorithm 2 without the second-order correction).

    One network evaluation per step: y_s = y_t + (sigma_s - sigma_t) eps_hat.
    With ``s_churn = 0`` it is deterministic (DDIM, eta = 0, on the same
    timesteps); with churn each step first raises the noise from sigma_t to
    sigma_hat = sigma_t (1 + gamma), snapped to a trained timestep, by adding
    fresh noise.
    """
    return karras_sampler(eps_fn, diffusion, x_T, steps=steps, t_start=t_start, generator=generator,
                          callback=callback, spacing=spacing, second_order=False, s_churn=s_churn,
                          s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


@torch.no_grad()
@karras_args
def heun(eps_fn: EpsFn, diffusion: Diffusion, x_T: Tensor, *, steps: int | None = None, t_start: int | None = None,
         generator: torch.Generator | None = None, callback: StepCallback | None = None, spacing: Spacing = "karras",
         s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 2; Algorithm 1 when ``s_churn = 0``).

    An Euler step to sigma_s, then the average of the slopes at both ends:
    y_s = y_t + (sigma_s - sigma_t) (eps_hat(t) + eps_hat(s)) / 2; two network
    evaluations per step, one on the last step (to the data) and on a step
    from zero terminal SNR (sigma_t = inf).
    """
    return karras_sampler(eps_fn, diffusion, x_T, steps=steps, t_start=t_start, generator=generator,
                          callback=callback, spacing=spacing, second_order=True, s_churn=s_churn,
                          s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
