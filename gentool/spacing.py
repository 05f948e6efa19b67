"""Where the discrete chain's samplers evaluate the network: the timestep spacings of :class:`gentool.Diffusion`.

Evenly in t, "trailing" (Lin et al. 2024, Table 2), evenly in log-SNR (Lu et
al. 2022) or the Karras et al. (2022, eq. 5) sigmas, always snapped to the
trained integer timesteps because the network is only evaluated there.

Timesteps are 0-based (``t`` in ``0..T-1`` is Ho et al.'s ``t + 1``); ``-1``
stands for the data, where alpha-bar is 1. In the variables of Karras et al.
(2022) ``sigma_t = sqrt((1 - abar_t) / abar_t)`` and
``lambda_t = log(alpha_t / sigma_t) = -log sigma_t`` (the half log-SNR).
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
from torch import Tensor


class Diffusion(Protocol):
    """What the spacings read of the discrete chain (:class:`gentool.Diffusion`; no import, so no cycle)."""

    alphas_cumprod_64: Tensor
    num_timesteps: int

    def timesteps(self, steps: int | None = None, t_start: int | None = None) -> list[int]: ...

Spacing = Literal["uniform", "trailing", "logsnr", "karras"]
SPACINGS: tuple[str, ...] = ("uniform", "trailing", "logsnr", "karras")

#: Lower end of the log-SNR range a spacing covers when the schedule's last lambda is an
#: outlier (:func:`outlying_end`), lambda = -5.1 (sigma = 164; the value diffusers suggests
#: for its ``lambda_min_clipped`` with the cosine schedule). Smooth schedules are not clipped.
LAMBDA_MIN = -5.1


def abar(diffusion: Diffusion, t: int) -> float:
    """alpha-bar at 0-based step ``t``; ``t = -1`` (the data, x_0) gives 1."""
    return 1.0 if t < 0 else float(diffusion.alphas_cumprod_64[t])


def sigma_of(a: float) -> float:
    """Karras et al.'s sigma = sqrt((1 - abar) / abar): 0 at the data, inf at zero SNR."""
    return math.inf if a == 0 else math.sqrt((1 - a) / a)


def log_snr_half(a: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(abar / (1 - abar)); -inf where abar = 0."""
    return -math.inf if a == 0 else 0.5 * (math.log(a) - math.log1p(-a))


def lambdas(diffusion: Diffusion) -> Tensor:
    """lambda_t for every timestep, float64 ``[T]`` (decreasing in t)."""
    a = diffusion.alphas_cumprod_64
    return 0.5 * (a.log() - torch.log1p(-a))


def timestep_tensor(x: Tensor, t: int) -> Tensor:
    """The int64 batch ``[B]`` of timestep ``t`` that a noise prediction takes."""
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


# -- spacing -------------------------------------------------------------------

def trailing_timesteps(diffusion: Diffusion, steps: int | None, t_start: int | None) -> list[int]:
    """Lin et al. (2024), Table 2 "trailing": ``round(t_start + 1 - k (t_start + 1) / n) - 1``, k = 0..n-1.

    Starts at ``t_start`` (T - 1, the paper's T: where alpha-bar is 0 under
    zero terminal SNR) and ends at ``(t_start + 1) / n - 1``, not at 0.
    """
    uniform = diffusion.timesteps(steps, t_start)
    n, top = len(uniform), uniform[0] + 1
    out: list[int] = []
    for k in range(n):
        t = round(top - k * top / n) - 1
        if not out or t < out[-1]:
            out.append(t)
    return out


def snap_lambdas(diffusion: Diffusion, targets: list[float], t_start: int) -> list[int]:
    """Timesteps for decreasing-noise targets in lambda: ``t_start`` first, then each nearest one.

    Kept strictly decreasing with room left for the rest, so the result has
    ``len(targets)`` entries and ends at 0.
    """
    lam, n = lambdas(diffusion), len(targets)
    out = [t_start]
    for i, target in enumerate(targets[1:], start=1):
        nearest = int((lam[: t_start + 1] - target).abs().argmin())
        out.append(max(min(nearest, out[-1] - 1), n - 1 - i))  # strictly decreasing, room left for the rest
    return out


def outlying_end(lam: Tensor, t_start: int) -> bool:
    """Is lambda at ``t_start`` an outlier: -inf (zero terminal SNR), or its step down more than 3x the step before?

    The cosine schedule's clipped last beta gives gaps of 0.41, 0.69 and then 3.45 (T = 1000); smooth schedules
    (linear, sigmoid) have equal gaps there.
    """
    if t_start < 2:
        return False
    last, before = float(lam[t_start - 1] - lam[t_start]), float(lam[t_start - 2] - lam[t_start - 1])
    return math.isinf(last) or last > 3 * before


def lambda_range(diffusion: Diffusion, t_start: int, lambda_min: float | None = None) -> tuple[float, float]:
    """The lambda interval a spacing covers: [max(lambda_{t_start}, lambda_min), lambda_0].

    ``lambda_min = None`` clips at :data:`LAMBDA_MIN` only where lambda_{t_start} is an outlier
    (:func:`outlying_end`), so a smooth schedule that ends lower keeps its whole range.
    """
    lam = lambdas(diffusion)
    if lambda_min is None:
        lambda_min = LAMBDA_MIN if outlying_end(lam, t_start) else -math.inf
    return max(float(lam[t_start]), lambda_min), float(lam[0])


def spaced_timesteps(
    diffusion: Diffusion,
    steps: int | None = None,
    t_start: int | None = None,
    spacing: str = "uniform",
    *,
    lambda_min: float | None = None,
    rho: float = 7.0,
) -> list[int]:
    """As many timesteps as ``diffusion.timesteps(steps, t_start)``, decreasing, placed by ``spacing``.

    * ``"uniform"``: evenly in t (``Diffusion.timesteps``: both ends included);
    * ``"trailing"``: Lin et al. (2024), see :func:`trailing_timesteps`;
    * ``"logsnr"``: evenly in lambda (Lu et al. 2022, for low-resolution images);
    * ``"karras"``: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) -
      sigma_max^(1/rho)))^rho (Karras et al. 2022, eq. 5).

    ``logsnr`` and ``karras`` cover lambda from max(lambda_{t_start},
    ``lambda_min``) to lambda_0: the cosine schedule's clipped last beta makes
    its final lambda an outlier (-9.9 against -6.5 one step earlier), and zero
    terminal SNR makes it -inf. ``lambda_min = None`` clips at -5.1 only for such
    an outlier (:func:`lambda_range`). The first step stays at ``t_start`` either way.
    """
    uniform = diffusion.timesteps(steps, t_start)
    if spacing == "uniform":
        return uniform
    if spacing == "trailing":
        return trailing_timesteps(diffusion, steps, t_start)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}; got {spacing!r}")
    n, t_start = len(uniform), uniform[0]
    if n == t_start + 1 or n < 3:
        return uniform
    lo, hi = lambda_range(diffusion, t_start, lambda_min)
    if spacing == "logsnr":
        targets = torch.linspace(lo, hi, n, dtype=torch.float64).tolist()
    else:  # karras, eq. 5, in sigma = exp(-lambda)
        s_max, s_min = math.exp(-lo) ** (1 / rho), math.exp(-hi) ** (1 / rho)
        targets = [-rho * math.log(s_max + i / (n - 1) * (s_min - s_max)) for i in range(n)]
    return snap_lambdas(diffusion, targets, t_start)
