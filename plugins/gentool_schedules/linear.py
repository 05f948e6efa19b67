"""The linear schedule of Ho et al. (2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from gentool_schedules.betas import beta_range_schedule


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
    return beta_range_schedule(timesteps, beta_start, beta_end, zero_terminal_snr,
                               lambda: torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64))
