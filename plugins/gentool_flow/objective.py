"""``flow_matching``: conditional flow matching with the velocity target (Lipman et al. 2022; Esser et al. 2024).

Per example: t from the time distribution (then shifted, eq. 23), eps ~ N(0, I),
x_t = alpha(t) x_0 + sigma(t) eps and the loss is the squared error of the
network's velocity against u = alpha' x_0 + sigma' eps, averaged over pixels
(Esser et al. 2024, eq. 4 with w_t = 1: the ``rf`` loss). On the linear path
u = eps - x_0.

Time distributions (Esser et al. 2024, sec. 3.1):

* ``uniform``: t ~ U(0, 1] (Liu et al. 2022; Lipman et al. 2022);
* ``logit_normal``: t = sigmoid(m + s n), n ~ N(0, 1), with density
  pi(t; m, s) = 1 / (s sqrt(2 pi)) 1 / (t (1 - t)) exp(-(logit(t) - m)^2 / (2 s^2))
  (eq. 19; m = 0, s = 1 scored best in their Table 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from gentool_flow.process import shift_time
from gentool_flow.velocity import Velocity

TIMES = ("uniform", "logit_normal")


def draw_time(n: int, kind: str, m: float, s: float, shift: float, device, generator) -> Tensor:
    """``n`` training times in (0, 1] from ``kind``, shifted by eq. 23 (float32)."""
    if kind == "uniform":
        t = 1 - torch.rand((n,), device=device, generator=generator, dtype=torch.float64)  # (0, 1]
    else:
        z = torch.randn((n,), device=device, generator=generator, dtype=torch.float64)
        t = torch.sigmoid(m + s * z)
    return shift_time(t, shift).clamp(min=torch.finfo(torch.float32).tiny).float()


def logit_normal_density(t: Tensor, m: float, s: float) -> Tensor:
    """Esser et al. (2024), eq. 19: the density of sigmoid(m + s n) at ``t`` in (0, 1)."""
    logit = torch.log(t / (1 - t))
    return torch.exp(-(logit - m) ** 2 / (2 * s**2)) / (s * math.sqrt(2 * math.pi) * t * (1 - t))


class FlowMatching:
    """t from ``time`` (shifted), x_t on the process's path, MSE of the velocity."""

    learned_variance = False
    parameterisation = Velocity()

    def __init__(self, time: str, m: float, s: float, shift: float) -> None:
        self.time, self.m, self.s, self.shift = time, m, s, shift

    def check(self, process) -> str | None:
        """The velocity needs derivatives(t), and the times are drawn on [0, 1]: the process's t must run there."""
        why = self.parameterisation.check(process)
        if why:
            return why
        if (process.t_data, process.t_max) != (0.0, 1.0):
            return (f"flow matching draws t in (0, 1], and this process's time runs from {process.t_data:g} to "
                    f"{process.t_max:g}; use [process] name = \"flow\"")
        return None

    def draw(self, process, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One t per example from the time distribution (shifted), then the noise, from ``generator``."""
        t = draw_time(x0.shape[0], self.time, self.m, self.s, self.shift, x0.device, generator)
        return t, torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)

    def loss(self, net, process, x0: Tensor, labels: Tensor | None, t: Tensor,
             noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-example mean over pixels of |u_theta(x_t, t) - (alpha' x_0 + sigma' eps)|^2, float32 ``[B]``."""
        shape = (-1, *[1] * (x0.ndim - 1))
        alpha = process.alpha(t).to(x0.dtype).reshape(shape)
        sigma = process.sigma(t).to(x0.dtype).reshape(shape)
        x_t = alpha * x0 + sigma * noise
        target = self.parameterisation.target(process, x0, noise, t)
        return (net(x_t, t, labels).float() - target.float()).square().flatten(1).mean(1), {}

    def __repr__(self) -> str:
        return f"FlowMatching(time={self.time!r}, m={self.m}, s={self.s}, shift={self.shift})"


def flow_matching(
    *,
    time: Literal["uniform", "logit_normal"] = "uniform",
    m: float = 0.0,
    s: float = 1.0,
    shift: float = 1.0,
) -> FlowMatching:
    """Flow matching: regress the velocity u = eps - x_0 of the linear path (Lipman et al. 2022; Liu et al. 2022).

    The network predicts the velocity (the ``velocity`` parameterisation:
    x_0 = x_t - t u, eps = x_t + (1 - t) u on the ``flow`` process); the loss
    is its squared error, unweighted (Esser et al. 2024, eq. 4). Class labels
    and classifier-free guidance work as for any objective (the conditioner
    drops labels with its ``p_uncond``).

    Args:
        time: the training time distribution: ``"uniform"`` in (0, 1] or
            ``"logit_normal"`` (t = sigmoid(m + s n); Esser et al. 2024, eq. 19).
        m: location of the logit-normal distribution (0: centred on t = 0.5; > 0 favours noisier times).
        s: scale of the logit-normal distribution (Esser et al.'s best: m = 0, s = 1).
        shift: the resolution-dependent time shift (Esser et al. 2024, eq. 23)
            applied to the drawn t: shift t / (1 + (shift - 1) t), shift = sqrt(m / n)
            for m pixels trained at the setting of n; 1 leaves t as drawn.
    """
    if time not in TIMES:
        raise ValueError(f"time must be one of {', '.join(TIMES)}; got {time!r}")
    for name, value in (("s", s), ("shift", shift)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m):
        raise ValueError(f"m must be a finite number, got {m!r}")
    return FlowMatching(time, float(m), float(s), float(shift))
