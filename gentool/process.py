"""The noise process: the marginal x_t = alpha(t) x_0 + sigma(t) eps over real-valued time.

Every process in gentool (the discrete variance-preserving chain of Ho et al.
2020, flow matching, EDM's and Song et al.'s variance-exploding process, or a
plugin's own) is one object with the same few members, written in the
notation of Kingma et al. (2021) and Karras et al. (2022):

* ``alpha(t)``, ``sigma(t)``: the signal and noise scales of the marginal
  q(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I). A number gives a float, a tensor
  ``[B]`` a tensor ``[B]``.
* ``log_snr(t)`` = lambda(t) = log(alpha(t)^2 / sigma(t)^2), decreasing in t,
  and its inverse ``t_of_log_snr(lam)``. Karras et al.'s noise level is
  sigma(t) / alpha(t) = exp(-lambda / 2).
* ``t_data`` (the time of the data: alpha = 1, sigma = 0) and ``t_max`` (where
  sampling starts: the noisiest time). Time grows with the noise.
* ``grid(steps, t_start, spacing)``: the decreasing times a sampler visits,
  from ``t_start`` (default ``t_max``) towards the data; the data end itself
  is not in the grid (a sampler's last step goes to ``t_data``).
* ``prior_std``: the standard deviation of the start noise x_T ~ N(0, prior_std^2 I).
* ``noise_label(t)``: what a network is told about t (its "c_noise") when the
  parameterisation does not say otherwise.
* ``discrete``: the network is only trained at integer times (the DDPM chain);
  samplers then stay on them (``grid`` and ``t_of_log_snr`` return trained steps).
* ``time_at(fraction)``: the time a fraction 0..1 of the way from the data to
  ``t_max`` (SDEdit's t_0), in the process's own sense of "how far".
* ``derivatives(t)`` (optional): (d alpha / dt, d sigma / dt), which a flow
  velocity needs.

:class:`ContinuousProcess` implements everything from ``alpha`` and ``sigma``
alone (a plugin overrides what it knows in closed form);
:class:`gentool.Diffusion` is the discrete chain.
"""

from __future__ import annotations

import math
from typing import Protocol, Union, runtime_checkable

import torch
from torch import Tensor

Time = Union[float, int, Tensor]

#: The spacings every process accepts in :meth:`Process.grid`.
SPACINGS: tuple[str, ...] = ("uniform", "trailing", "logsnr", "karras")

#: Lowest log-SNR (full, log alpha^2 / sigma^2) a ``logsnr`` or ``karras`` grid covers when the process's
#: own end is an outlier (infinite noise: flow matching's t = 1, zero terminal SNR): -10.2, Karras' sigma = 164.
LOG_SNR_MIN = -10.2


@runtime_checkable
class Process(Protocol):
    """A noise process (the ``[process]`` table); see the module docstring for each member."""

    t_data: float
    t_max: float
    prior_std: float
    discrete: bool

    def alpha(self, t: Time) -> Time: ...

    def sigma(self, t: Time) -> Time: ...

    def log_snr(self, t: Time) -> Time: ...

    def t_of_log_snr(self, lam: Time) -> Time: ...

    def grid(self, steps: int | None = None, t_start: float | None = None, spacing: str = "uniform", *,
             rho: float = 7.0, log_snr_min: float | None = None) -> list[float]: ...

    def noise_label(self, t: Tensor) -> Tensor: ...

    def time_at(self, fraction: float) -> float: ...


def as_batch(x: Tensor, t: Time, process: Process) -> Tensor:
    """``t`` as a tensor ``[B]`` for the batch ``x``: int64 on a discrete process, else ``x``'s float dtype."""
    if isinstance(t, Tensor) and t.ndim == 1:
        return t.to(x.device)
    dtype = torch.long if process.discrete else (x.dtype if x.is_floating_point() else torch.float32)
    return torch.full((x.shape[0],), float(t) if not process.discrete else int(t), dtype=dtype, device=x.device)


def broadcast(value: Time, x: Tensor) -> Time:
    """A per-example tensor ``[B]`` reshaped to ``[B, 1, ..., 1]`` to scale ``x``; numbers unchanged."""
    if isinstance(value, Tensor):
        return value.to(x.device, x.dtype if x.is_floating_point() else value.dtype).reshape(-1, *[1] * (x.ndim - 1))
    return value


def karras_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> list[float]:
    """Karras et al. (2022), eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    if n == 1:
        return [sigma_max]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (n - 1) * (b - a)) ** rho for i in range(n)]


class ContinuousProcess:
    """A process over real t in [t_data, t_max] from ``alpha`` and ``sigma`` alone (subclass and override).

    A subclass implements :meth:`alpha_of` and :meth:`sigma_of` on float64
    tensors and sets ``t_data``, ``t_max``; the rest has generic defaults:

    * ``t_of_log_snr`` by bisection (override with a closed form where there is one);
    * ``grid``: ``uniform`` evenly in t down to the data end (excluded),
      ``trailing`` the same, ``logsnr`` evenly in lambda and ``karras`` by
      Karras et al. (2022) eq. 5 in sigma / alpha, both between lambda(t_start)
      (at least :data:`LOG_SNR_MIN` when t_start is an infinite-noise end) and
      lambda at Karras' ``sigma_min``; the first time is always ``t_start``;
    * ``noise_label(t) = 1000 t / t_max`` (the DDPM timestep scale the
      built-in networks' embeddings are made for);
    * ``time_at(f) = t_data + f (t_max - t_data)``.
    """

    t_data: float = 0.0
    t_max: float = 1.0
    prior_std: float = 1.0
    discrete: bool = False
    #: the lowest noise level (Karras' sigma = sigma / alpha) a ``logsnr`` or ``karras`` grid reaches
    sigma_min: float = 0.002

    # -- to implement ----------------------------------------------------------
    def alpha_of(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma_of(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    # -- the protocol ------------------------------------------------------------
    def _eval(self, fn, t: Time) -> Time:
        if isinstance(t, Tensor):
            return fn(t.double()).to(t.dtype if t.is_floating_point() else torch.float32)
        return float(fn(torch.tensor(float(t), dtype=torch.float64)))

    def alpha(self, t: Time) -> Time:
        return self._eval(self.alpha_of, t)

    def sigma(self, t: Time) -> Time:
        return self._eval(self.sigma_of, t)

    def log_snr(self, t: Time) -> Time:
        def lam(tt: Tensor) -> Tensor:
            return 2 * (self.alpha_of(tt).log() - self.sigma_of(tt).log())
        return self._eval(lam, t)

    def t_of_log_snr(self, lam: Time) -> Time:
        """Bisection on the decreasing lambda(t) over [t_data, t_max] (60 halvings: float64 resolution)."""
        target = torch.as_tensor(lam, dtype=torch.float64)
        lo = torch.full_like(target, float(self.t_data))
        hi = torch.full_like(target, float(self.t_max))
        for _ in range(60):
            mid = (lo + hi) / 2
            above = 2 * (self.alpha_of(mid).log() - self.sigma_of(mid).log()) > target
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        out = (lo + hi) / 2
        return out.to(lam.dtype) if isinstance(lam, Tensor) else float(out)

    def noise_label(self, t: Tensor) -> Tensor:
        return t.float() * (1000.0 / self.t_max)

    def time_at(self, fraction: float) -> float:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"t must be in [0, 1], a fraction of the way from the data ({self.t_data:g}) to the "
                             f"noisiest time ({self.t_max:g}), got {fraction}")
        return self.t_data + float(fraction) * (self.t_max - self.t_data)

    def grid(self, steps: int | None = None, t_start: float | None = None, spacing: str = "uniform", *,
             rho: float = 7.0, log_snr_min: float | None = None) -> list[float]:
        t_start = self.t_max if t_start is None else float(t_start)
        if not self.t_data < t_start <= self.t_max:
            raise ValueError(f"t_start must be in ({self.t_data:g}, {self.t_max:g}], got {t_start:g}")
        n = 50 if steps is None else int(steps)
        if n < 1:
            raise ValueError(f"steps must be at least 1, got {n}")
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}; got {spacing!r}")
        if spacing in ("uniform", "trailing") or n < 3:
            return torch.linspace(t_start, self.t_data, n + 1, dtype=torch.float64)[:-1].tolist()
        lam_start = float(self.log_snr(t_start))
        lo = lam_start if math.isfinite(lam_start) else (LOG_SNR_MIN if log_snr_min is None else log_snr_min)
        if log_snr_min is not None:
            lo = max(lo, log_snr_min)
        hi = -2 * math.log(self.sigma_min)
        if spacing == "logsnr":
            lams = torch.linspace(lo, hi, n, dtype=torch.float64)
        else:
            sig = karras_sigmas(math.exp(-lo / 2), self.sigma_min, n, rho)
            lams = -2 * torch.tensor(sig, dtype=torch.float64).log()
        times = [float(t) for t in self.t_of_log_snr(lams[1:])]
        return [t_start, *times]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t_data={self.t_data:g}, t_max={self.t_max:g})"


def check_process(process: object) -> None:
    """Raise ``TypeError`` unless ``process`` has every member of :class:`Process`."""
    missing = [name for name in ("t_data", "t_max", "prior_std", "discrete", "alpha", "sigma", "log_snr",
                                 "t_of_log_snr", "grid", "noise_label", "time_at")
               if not hasattr(process, name)]
    if missing:
        raise TypeError(f"{type(process).__name__} is not a gentool Process: it lacks {', '.join(missing)}")
