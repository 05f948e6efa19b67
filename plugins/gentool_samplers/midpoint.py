"""The explicit midpoint method on the probability-flow ODE in the process's own time, for any continuous process."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gentool import DenoiseFn, Process, Spacing, StepCallback, data_time, reverse_loop


def velocity(denoise: DenoiseFn, process: Any, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """(dx/dt, x0_hat) at (x, t): alpha'(t) x0_hat + sigma'(t) eps_hat, the ODE of every affine process."""
    d = denoise(x, t)
    d_alpha, d_sigma = process.derivatives(t)
    return float(d_alpha) * d.x0 + float(d_sigma) * d.eps, d.x0


def supports(process: Any) -> str | None:
    """The ODE in t needs alpha'(t) and sigma'(t): a continuous process with ``derivatives``."""
    if getattr(process, "discrete", False) or not callable(getattr(process, "derivatives", None)):
        return ("it integrates dx/dt = alpha'(t) x0 + sigma'(t) eps and needs the process's derivatives(t), which "
                "the discrete DDPM chain (integer timesteps) has not; use heun (second order in Karras' sigma)")
    return None


@torch.no_grad()
def midpoint(
    denoise: DenoiseFn, process: Process, x_T: Tensor, *, steps: int | None = None, t_start: float | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
    spacing: Spacing = "uniform",
) -> Tensor:
    """The explicit midpoint method (second order) on dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat.

    The probability-flow ODE written in the process's own time (the marginal
    velocity of an affine path; on flow matching's linear path u = eps - x0,
    Lipman et al. 2022): from t to s = t + h, x_mid = x_t + (h / 2) u(x_t, t),
    then x_s = x_t + h u(x_mid, t + h / 2). Two network evaluations per step.
    On the ``flow`` process with the ``uniform`` spacing this is the midpoint
    solver of flow-matching codebases. Needs the process's ``derivatives(t)``
    (``flow``, ``edm``, ``ve``); deterministic (``generator`` is not used).

    Args:
        spacing: where the ``steps`` times go: ``"uniform"`` (evenly in t),
            ``"karras"`` (Karras et al. 2022, eq. 5), ``"logsnr"`` or ``"trailing"``.
    """
    def step(i: int, t, s, x: Tensor) -> tuple[Tensor, Tensor]:
        h = s - t
        u, x0 = velocity(denoise, process, x, t)
        u_mid, _ = velocity(denoise, process, x + (h / 2) * u, t + h / 2)
        return x + h * u_mid, x0

    return reverse_loop(list(process.grid(steps, t_start, spacing)), x_T, step, callback, data_time(process))


midpoint.supports = supports
