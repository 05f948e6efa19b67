"""The ``velocity`` parameterisation: the network predicts u = d x_t / dt of an affine path.

For x_t = alpha(t) x_0 + sigma(t) eps with derivatives alpha' and sigma'
(``process.derivatives(t)``), the conditional velocity is u = alpha' x_0 +
sigma' eps (Lipman et al. 2022, eq. 21; Esser et al. 2024, eq. 4). The pair
(x_t, u) is a linear map of (x_0, eps) with determinant
d = alpha sigma' - sigma alpha', so

    x_0 = (sigma' x_t - sigma u) / d,    eps = (alpha u - alpha' x_t) / d.

On the linear path (alpha = 1 - t, sigma = t; d = 1): u = eps - x_0,
x_0 = x_t - t u and eps = x_t + (1 - t) u. Guidance mixes x_0 and eps (an
affine output: the same as mixing the velocities).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gentool import Affine, Denoised


def _scale(value, x: Tensor):
    """A number as it is, a tensor ``[B]`` shaped ``[B, 1, ..., 1]`` in ``x``'s dtype."""
    if isinstance(value, Tensor):
        return value.to(x.device, x.dtype).reshape(-1, *[1] * (x.ndim - 1))
    return value


def path_coefficients(process: Any, x: Tensor, t) -> tuple[Any, Any, Any, Any]:
    """alpha, sigma, alpha', sigma' at ``t`` (a number or ``[B]``), shaped to scale ``x``."""
    d_alpha, d_sigma = process.derivatives(t)
    return tuple(_scale(v, x) for v in (process.alpha(t), process.sigma(t), d_alpha, d_sigma))


class Velocity(Affine):
    """The network predicts u = alpha'(t) x_0 + sigma'(t) eps (see the module docstring)."""

    name = "velocity"

    def denoised(self, process: Any, x: Tensor, t, output: Tensor) -> Denoised:
        alpha, sigma, d_alpha, d_sigma = path_coefficients(process, x, t)
        det = alpha * d_sigma - sigma * d_alpha
        return Denoised((d_sigma * x - sigma * output) / det, (alpha * output - d_alpha * x) / det)

    def target(self, process: Any, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        _, _, d_alpha, d_sigma = path_coefficients(process, x0, t)
        return d_alpha * x0 + d_sigma * eps

    def check(self, process: Any) -> str | None:
        if not callable(getattr(process, "derivatives", None)) or getattr(process, "discrete", False):
            return ("the velocity d x_t / dt needs a continuous process with derivatives(t) (d alpha / dt, "
                    "d sigma / dt), and this one has none (the discrete DDPM chain's times are integer steps); "
                    "use [process] name = \"flow\", or prediction = \"v\" on the chain")
        for t in (process.t_max, (process.t_data + process.t_max) / 2):
            alpha, sigma = float(process.alpha(t)), float(process.sigma(t))
            d_alpha, d_sigma = (float(v) for v in process.derivatives(t))
            if alpha * d_sigma - sigma * d_alpha == 0:
                return (f"at t = {t:g} the velocity does not determine x_0 and eps (alpha sigma' - sigma alpha' "
                        "= 0)")
        return None
