"""Does a schedule leave signal at t = T? The one rule behind the warning of ``gentool check`` and ``gentool run``.

Sampling starts from x_T ~ N(0, I), but the forward process ends at
x_T = sqrt(abar_T) x_0 + sqrt(1 - abar_T) eps. Where sqrt(abar_T) is not
about 0 the model is trained on an x_T that still holds the image and
sampled from one that does not (Lin et al. 2024, "Common diffusion noise
schedules and sample steps are flawed", sec. 3.1).

The limit is 0.01, just above what the schedules of the papers end at, so
that they pass and a schedule with a leak does not: Ho et al.'s linear
schedule (T = 1000, betas 1e-4..0.02) ends at 0.0064, the sigmoid
schedule's defaults at 0.0063 and the cosine schedule at 0.00005, while
Stable Diffusion's schedule (scaled linear, 0.00085..0.012), whose leak Lin
et al. show (samples held near medium brightness), ends at 0.068 and the
linear schedule with T = 20 at 0.90. At the limit the prior term
KL(q(x_T | x_0) || N(0, I)) is about abar_T x_0^2 / 2 <= 5e-5 nats per
dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The largest sqrt(alpha-bar_T) that passes without a warning (see the module's docstring).
TERMINAL_SIGNAL_LIMIT = 0.01


def terminal_signal(betas: Tensor) -> float:
    """sqrt(alpha-bar_T) = sqrt(prod_t (1 - beta_t)): how much of x_0 is left in x_T (eq. 4), in float64."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    return float(torch.prod(1.0 - betas).sqrt())


def terminal_signal_warning(betas: Tensor, limit: float = TERMINAL_SIGNAL_LIMIT) -> str | None:
    """One line saying that the schedule leaves signal at t = T and how to fix it, or ``None`` when it does not.

    Args:
        betas: the schedule's betas ``[T]`` (what a schedule factory returns).
        limit: the largest sqrt(alpha-bar_T) that passes.
    """
    signal = terminal_signal(betas)
    if signal <= limit:
        return None
    return (f"the schedule leaves signal at t = T: sqrt(alpha-bar_T) = {signal:.2g} (above {limit:g}), so x_T is "
            f"{signal:.2g} x_0 + {(1 - signal**2) ** 0.5:.2g} eps, not the N(0, I) sampling starts from; use more "
            f"timesteps (T = {len(betas)} now), larger betas (beta_end), or zero_terminal_snr = true (with a v or "
            "x0 prediction)")
