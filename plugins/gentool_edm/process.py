"""``edm`` and ``ve``: the variance-exploding processes x_t = x_0 + sigma(t) eps (alpha = 1).

* ``edm`` (Karras et al. 2022): t = sigma on [0, sigma_max]; samplers asking
  for ``spacing = "karras"`` get eq. 5's sigma_i between sigma_max and
  sigma_min with rho = 7, exactly.
* ``ve`` (Song et al. 2021, the VE SDE): sigma(t) = sigma_min (sigma_max /
  sigma_min)^t on t in (0, 1], the data at t = 0 (sigma = 0; sigma jumps to
  sigma_min just above it, as the SDE's perturbation kernel starts there).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool import ContinuousProcess, karras_sigmas

#: the smallest VE time a sampler visits or t_of_log_snr returns (Song et al. sample down to t = 1e-5)
VE_T_MIN = 1e-5


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _check_range(sigma_min, sigma_max) -> tuple[float, float]:
    lo, hi = _positive("sigma_min", sigma_min), _positive("sigma_max", sigma_max)
    if lo >= hi:
        raise ValueError(f"sigma_min ({lo:g}) must be below sigma_max ({hi:g})")
    return lo, hi


class EDMProcess(ContinuousProcess):
    """alpha = 1, sigma(t) = t on [0, sigma_max] (Karras et al. 2022, sec. 2 and Table 1)."""

    t_data = 0.0

    def __init__(self, sigma_min: float, sigma_max: float, rho: float) -> None:
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.t_max = self.prior_std = sigma_max

    def alpha_of(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma_of(self, t: Tensor) -> Tensor:
        return t

    def t_of_log_snr(self, lam):
        """t = sigma = exp(-lambda / 2); also above sigma_max (the time where sampling starts, not an end of
        the process: Algorithm 2's churn may raise t_0 = sigma_max)."""
        if isinstance(lam, Tensor):
            return torch.exp(-lam / 2)
        return math.exp(-lam / 2) if lam > -1400 else math.inf

    def derivatives(self, t):
        """(d alpha / dt, d sigma / dt) = (0, 1)."""
        if isinstance(t, Tensor):
            return torch.zeros_like(t, dtype=torch.float64), torch.ones_like(t, dtype=torch.float64)
        return 0.0, 1.0

    def noise_label(self, t: Tensor) -> Tensor:
        """1000 (ln sigma - ln sigma_min) / (ln sigma_max - ln sigma_min): log sigma on the scale of the DDPM
        timesteps the built-in embeddings are made for (the ``ve`` process's 1000 t at the same sigma).
        EDM's own c_noise = ln(sigma) / 4 is the ``edm`` objective's (its preconditioning)."""
        log_sigma = t.double().clamp(min=1e-20).log()
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return (1000.0 * (log_sigma - lo) / (hi - lo)).float()

    def time_at(self, fraction: float) -> float:
        """sigma_min (sigma_max / sigma_min)^f: the same noise level as the ``ve`` process at t = f (0: the data)."""
        super().time_at(fraction)  # the range check
        if fraction == 0:
            return 0.0
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** float(fraction)

    def grid(self, steps=None, t_start=None, spacing="uniform", *, rho=None, log_snr_min=None):
        """:meth:`ContinuousProcess.grid`, and for ``karras`` eq. 5 in sigma itself, exactly (``rho``: the process's)."""
        rho = self.rho if rho is None else rho
        n = 50 if steps is None else int(steps)
        if spacing != "karras" or n < 3:
            return super().grid(steps, t_start, spacing, rho=rho, log_snr_min=log_snr_min)
        start = self.t_max if t_start is None else float(t_start)
        super().grid(1, start)  # the range check of t_start
        top = start if log_snr_min is None else min(start, math.exp(-log_snr_min / 2))
        return [start, *karras_sigmas(top, self.sigma_min, n, rho)[1:]]

    def __repr__(self) -> str:
        return f"EDMProcess(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, rho={self.rho:g})"


class VEProcess(ContinuousProcess):
    """alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t for t > 0 and 0 at t = 0 (Song et al. 2021)."""

    t_data, t_max = 0.0, 1.0

    def __init__(self, sigma_min: float, sigma_max: float) -> None:
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.prior_std = sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def alpha_of(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma_of(self, t: Tensor) -> Tensor:
        return torch.where(t > 0, self.sigma_min * torch.exp(t * self.log_ratio), torch.zeros_like(t))

    def t_of_log_snr(self, lam):
        """t = ln(sigma / sigma_min) / ln(sigma_max / sigma_min) with sigma = exp(-lambda / 2), clipped to
        [1e-5, 1] (sigma_min and below: the lowest time a sampler visits)."""
        if isinstance(lam, Tensor):
            return ((-lam / 2 - math.log(self.sigma_min)) / self.log_ratio).clamp(VE_T_MIN, 1.0)
        return min(max((-lam / 2 - math.log(self.sigma_min)) / self.log_ratio, VE_T_MIN), 1.0)

    def derivatives(self, t):
        """(d alpha / dt, d sigma / dt) = (0, sigma(t) ln(sigma_max / sigma_min)) for t > 0."""
        if isinstance(t, Tensor):
            return torch.zeros_like(t, dtype=torch.float64), self.sigma_of(t.double()) * self.log_ratio
        return 0.0, self.sigma(t) * self.log_ratio

    def __repr__(self) -> str:
        return f"VEProcess(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


def edm(*, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> EDMProcess:
    """Karras et al. (2022): x_t = x_0 + t eps, the time is the noise level sigma itself, t in [0, sigma_max].

    Sampling starts from x_T ~ N(0, sigma_max^2 I). ``spacing = "karras"`` (the
    default of ``euler``, ``heun`` and the stochastic samplers) gives eq. 5's
    sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    then the data; ``heun`` there is Algorithm 1 (2 with its churn options).
    Train it with ``[objective] name = "edm"`` (the preconditioning of Table 1).

    Args:
        sigma_min: the lowest noise level of the ``karras`` and ``logsnr`` grids (0.002 in the paper).
        sigma_max: the noisiest time, where sampling starts (80 in the paper).
        rho: the exponent of the ``karras`` grid (7 in the paper).
    """
    lo, hi = _check_range(sigma_min, sigma_max)
    return EDMProcess(lo, hi, _positive("rho", rho))


def ve(*, sigma_min: float = 0.01, sigma_max: float = 50.0) -> VEProcess:
    """Song et al. (2021), the VE SDE: x_t = x_0 + sigma(t) eps, sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    Time t in (0, 1] (the data at t = 0); sampling starts from x_T ~ N(0,
    sigma_max^2 I). The network is told 1000 t. Song et al. use sigma_min =
    0.01 and sigma_max = 50 for CIFAR-10 (sigma_max about the largest distance
    between two training images). Trains with the ``edm`` objective (log-normal
    sigma converted to t) or ``ddpm`` (t uniform).

    Args:
        sigma_min: sigma just above the data (t -> 0), also where ``karras`` and ``logsnr`` grids end.
        sigma_max: sigma at t = 1, where sampling starts.
    """
    return VEProcess(*_check_range(sigma_min, sigma_max))
