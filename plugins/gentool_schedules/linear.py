"""The linear schedule of Ho et al. (2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from gentool.diffusion import rescale_zero_terminal_snr


def linear(
    *, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, zero_terminal_snr: bool = False
) -> Tensor:
    """Linear betas from ``beta_start`` to ``beta_end`` (Ho et al. 2020, sec. 4).

    Args:
        timesteps: number of diffusion steps T.
        beta_start: beta_1, the first (smallest) noise variance.
        beta_end: beta_T, the last noise variance.
        zero_terminal_snr: rescale the betas so alpha-bar_T = 0 exactly,
            alpha-bar_1 unchanged (Lin et al. 2024, Algorithm 1); needs a model
            predicting v or x0.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    return rescale_zero_terminal_snr(betas) if zero_terminal_snr else betas
