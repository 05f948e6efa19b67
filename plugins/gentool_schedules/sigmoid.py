"""A sigmoid-shaped beta schedule."""

from __future__ import annotations

import torch
from torch import Tensor

from gentool_schedules.betas import beta_range_schedule


def sigmoid(
    *,
    timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    s_limit: float = 6.0,
    zero_terminal_snr: bool = False,
) -> Tensor:
    """Sigmoid betas: beta_t = beta_start + sigmoid(-s + 2 s t/T) (beta_end - beta_start).

    t is the paper's 1-based step (gentool's index + 1), so t/T runs over
    1/T, 2/T, ..., 1 and the betas rise smoothly from about ``beta_start`` to
    about ``beta_end`` with the steepest change mid-way.

    Args:
        timesteps: number of diffusion steps T.
        beta_start: the lower asymptote of the betas.
        beta_end: the upper asymptote of the betas.
        s_limit: s, how steep the sigmoid is (the argument runs over [-s, s]).
        zero_terminal_snr: rescale the betas so alpha-bar_T = 0 exactly,
            alpha-bar_1 unchanged (Lin et al. 2024, Algorithm 1); needs a model
            predicting v or x0.
    """

    def betas() -> Tensor:
        frac = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps  # t/T, paper's t
        return beta_start + torch.sigmoid(-s_limit + 2 * frac * s_limit) * (beta_end - beta_start)

    return beta_range_schedule(timesteps, beta_start, beta_end, zero_terminal_snr, betas)
