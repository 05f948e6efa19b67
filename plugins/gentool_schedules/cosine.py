"""The cosine schedule of Nichol and Dhariwal (2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool import rescale_zero_terminal_snr


def cosine(
    *, timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999, zero_terminal_snr: bool = False
) -> Tensor:
    """Cosine schedule: abar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2).

    Betas are ``1 - abar(t)/abar(t-1)`` clipped at ``max_beta`` (Nichol and
    Dhariwal 2021, eq. 17).

    Args:
        timesteps: number of diffusion steps T.
        s: small offset that keeps beta_t from being too small near t = 0.
        max_beta: upper clip on every beta, to avoid singularities near t = T.
        zero_terminal_snr: rescale the betas so alpha-bar_T = 0 exactly,
            alpha-bar_1 unchanged (Lin et al. 2024, Algorithm 1); needs a model
            predicting v or x0.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    betas = betas.clamp(min=1e-12, max=max_beta)
    return rescale_zero_terminal_snr(betas) if zero_terminal_snr else betas
