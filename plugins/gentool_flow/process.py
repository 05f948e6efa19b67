"""``flow``: the linear path x_t = (1 - t) x_0 + t eps of rectified flow and flow matching, t in [0, 1].

Liu et al. (2022) and Lipman et al. (2022, the conditional OT path with
sigma_min = 0); Esser et al. (2024, eq. 3 with a_t = 1 - t, b_t = t). The data is
at t = 0 and pure noise at t = 1 (alpha = 0, an infinite Karras sigma: samplers
start there from x_T ~ N(0, I)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool import ContinuousProcess


def shift_time(t, shift: float):
    """Esser et al. (2024), eq. 23: t_m = alpha t_n / (1 + (alpha - 1) t_n) with alpha = ``shift`` = sqrt(m / n).

    Moves times towards the noise for ``shift > 1`` (a larger image keeps more
    of its signal at the same t); 0 and 1 stay where they are.
    """
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def unshift_time(t, shift: float):
    """The inverse of :func:`shift_time`: t_n = t_m / (alpha - (alpha - 1) t_m)."""
    if shift == 1.0:
        return t
    return t / (shift - (shift - 1) * t)


class FlowProcess(ContinuousProcess):
    """alpha(t) = 1 - t, sigma(t) = t on [0, 1]; log-SNR 2 log((1 - t) / t), so t = sigmoid(-lambda / 2)."""

    t_data, t_max, prior_std = 0.0, 1.0, 1.0

    def __init__(self, shift: float = 1.0) -> None:
        self.shift = float(shift)

    def alpha_of(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma_of(self, t: Tensor) -> Tensor:
        return t

    def t_of_log_snr(self, lam):
        """The closed-form inverse of lambda(t) = 2 log((1 - t) / t): t = 1 / (1 + exp(lambda / 2))."""
        if isinstance(lam, Tensor):
            return torch.sigmoid(-lam / 2)
        return 1 / (1 + math.exp(lam / 2)) if lam < 1400 else 0.0

    def derivatives(self, t):
        """(d alpha / dt, d sigma / dt) = (-1, 1) for every t (numbers or tensors like ``t``)."""
        if isinstance(t, Tensor):
            return -torch.ones_like(t, dtype=torch.float64), torch.ones_like(t, dtype=torch.float64)
        return -1.0, 1.0

    def noise_label(self, t: Tensor) -> Tensor:
        """1000 t: the scale of the DDPM timesteps 0..999 that the built-in U-Net's and DiT's sinusoidal
        embeddings are made for (frequencies 10000^(-i/half)); t itself, in [0, 1], would leave all but the
        fastest few of their channels nearly constant."""
        return t.float() * 1000.0

    def grid(self, steps=None, t_start=None, spacing="uniform", *, rho=7.0, log_snr_min=None):
        """The times of :meth:`ContinuousProcess.grid`; with ``shift != 1`` the ``uniform`` and ``trailing``
        grids are shifted by eq. 23 (Esser et al. sample with the shift they trained with): even steps in the
        unshifted time from the one that shifts to ``t_start``."""
        if self.shift == 1.0 or spacing not in ("uniform", "trailing"):
            return super().grid(steps, t_start, spacing, rho=rho, log_snr_min=log_snr_min)
        start = self.t_max if t_start is None else float(t_start)
        times = super().grid(steps, unshift_time(start, self.shift) if 0 < start <= 1 else start, spacing)
        return [start, *(shift_time(t, self.shift) for t in times[1:])]

    def __repr__(self) -> str:
        return f"FlowProcess(shift={self.shift:g})"


def flow(*, shift: float = 1.0) -> FlowProcess:
    """The linear path of flow matching and rectified flow: x_t = (1 - t) x_0 + t eps, t in [0, 1].

    The data at t = 0, pure noise at t = 1 (Liu et al. 2022; Lipman et al. 2022;
    Esser et al. 2024). Train it with ``[objective] name = "flow_matching"`` (a
    velocity u = eps - x_0); every sampler runs on it: ``euler`` with ``spacing =
    "uniform"`` is the usual flow Euler method, ``midpoint`` and ``heun`` are
    second order. The network is told 1000 t (the built-in embeddings' scale).

    Args:
        shift: the time shift of Esser et al. (2024, eq. 23) applied to the
            ``uniform`` and ``trailing`` sampling grids: t -> shift t / (1 + (shift
            - 1) t), more steps at high noise for shift > 1 (SD3 uses 3.0 at
            1024^2); 1 leaves the grid as it is. The objective's own ``shift``
            moves the training times.
    """
    if not (isinstance(shift, (int, float)) and not isinstance(shift, bool) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a positive number, got {shift!r}")
    return FlowProcess(shift)
