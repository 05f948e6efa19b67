"""What the beta-range schedules (linear, sigmoid) share: the check of their range and the zero-terminal-SNR option."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from gentool import rescale_zero_terminal_snr


def beta_range_schedule(timesteps: int, beta_start: float, beta_end: float, zero_terminal_snr: bool,
                        betas: Callable[[], Tensor]) -> Tensor:
    """``betas()``, once ``timesteps >= 1`` and ``0 < beta_start <= beta_end < 1`` are checked.

    With ``zero_terminal_snr`` they are rescaled so alpha-bar_T = 0
    (:func:`gentool.diffusion.rescale_zero_terminal_snr`).
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    out = betas()
    return rescale_zero_terminal_snr(out) if zero_terminal_snr else out
