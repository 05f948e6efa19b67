"""DPM-Solver++(2M) of Lu et al. (2022): a second-order multistep ODE solver."""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import Tensor

from gentool.diffusion import Diffusion
from gentool_samplers.ancestral import abar


def log_snr_half(a: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(abar / (1 - abar))."""
    return 0.5 * (math.log(a) - math.log1p(-a))


def logsnr_timesteps(diffusion: Diffusion, steps: int | None, t_start: int | None) -> list[int]:
    """As many timesteps as ``diffusion.timesteps(steps, t_start)``, evenly spaced in lambda.

    Lu et al. (2022) recommend uniform logSNR steps for low-resolution images:
    time-uniform steps spend too few evaluations near the data, where lambda
    changes fastest. Each target lambda goes to its nearest timestep, kept
    strictly decreasing from ``t_start`` to 0.
    """
    uniform = diffusion.timesteps(steps, t_start)
    n, t_start = len(uniform), uniform[0]
    if n == t_start + 1 or n < 3:
        return uniform
    a = diffusion.alphas_cumprod_64
    lam = 0.5 * (a.log() - torch.log1p(-a))  # increasing as t decreases
    targets = torch.linspace(float(lam[t_start]), float(lam[0]), n, dtype=torch.float64)
    out = [t_start]
    for i, target in enumerate(targets[1:].tolist(), start=1):
        nearest = int((lam[: t_start + 1] - target).abs().argmin())
        out.append(max(min(nearest, out[-1] - 1), n - 1 - i))  # strictly decreasing, room left for the rest
    return out


@torch.no_grad()
def dpmpp_2m(
    eps_fn: Callable[[Tensor, Tensor], Tensor],
    diffusion: Diffusion,
    x_T: Tensor,
    *,
    steps: int | None = None,
    t_start: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], Tensor | None] | None = None,
    clip_denoised: bool = True,
    spacing: Literal["logsnr", "uniform"] = "logsnr",
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
            lambda, Lu et al.'s choice for low-resolution images) or
            ``"uniform"`` (evenly in t, ``Diffusion.timesteps``).
    """
    if spacing == "logsnr":
        ts = logsnr_timesteps(diffusion, steps, t_start)
    elif spacing == "uniform":
        ts = diffusion.timesteps(steps, t_start)
    else:
        raise ValueError(f"spacing must be 'logsnr' or 'uniform', got {spacing!r}")
    x = x_T
    x0_prev, h_prev = None, None
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        a_t, a_s = abar(diffusion, t), abar(diffusion, s)
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_fn(x, tt)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        if s < 0:
            x = x0  # sigma_s = 0: the ODE's end point is the denoised image
        else:
            h = log_snr_half(a_s) - log_snr_half(a_t)
            d = x0
            if x0_prev is not None:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev  # Lu et al. 2022b, Alg. 2
            x = ((1 - a_s) / (1 - a_t)) ** 0.5 * x - a_s**0.5 * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        if callback is not None:
            replaced = callback({"i": i, "t": t, "t_next": s, "x": x, "x0": x0})
            if replaced is not None:
                x = replaced
    return x
