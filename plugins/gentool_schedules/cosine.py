"""The cosine schedule of Nichol and Dhariwal (2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def cosine(*, timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule: abar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2).

    Betas are ``1 - abar(t)/abar(t-1)`` clipped at ``max_beta`` (Nichol and
    Dhariwal 2021, eq. 17).

    Args:
        timesteps: number of diffusion steps T.
        s: small offset that keeps beta_t from being too small near t = 0.
        max_beta: upper clip on every beta, to avoid singularities near t = T.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(min=1e-12, max=max_beta)
