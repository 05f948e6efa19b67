"""EDM's preconditioning (Karras et al. 2022, Table 1 and eq. 7) as a parameterisation, for alpha = 1 processes.

With sigma = sigma(t) and the data's standard deviation sigma_data:

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2)
    c_noise = ln(sigma) / 4

The network F sees (c_in x_t, c_noise); the denoiser is D = c_skip x_t + c_out F
(eq. 7), so x_0 = D and eps = (x_t - D) / sigma. F is regressed on its
effective target (x_0 - c_skip x_t) / c_out (eq. 8).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gentool import Affine, Denoised


def alpha_is_one(process: Any) -> str | None:
    """Why ``process`` is not x_t = x_0 + sigma eps (None: it is); checked at a few times."""
    times = [process.t_max, process.time_at(0.5), process.time_at(0.1)]
    for t in times:
        alpha = float(process.alpha(t))
        if abs(alpha - 1) > 1e-9:
            return (f"it is written for x_t = x_0 + sigma eps (alpha = 1: the edm and ve processes), and this "
                    f"process has alpha = {alpha:.4g} at t = {t:g}; use [process] name = \"edm\" or \"ve\"")
    return None


def _sigma(process: Any, x: Tensor, t) -> Tensor:
    """sigma(t) as float64 ``[B, 1, ..., 1]`` (or a 0-d tensor for a number t)."""
    sigma = process.sigma(t)
    if isinstance(sigma, Tensor):
        return sigma.double().to(x.device).reshape(-1, *[1] * (x.ndim - 1))
    return torch.tensor(float(sigma), dtype=torch.float64, device=x.device)


def scalings(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in) of Table 1 at ``sigma``."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt()


class EDMPrecond(Affine):
    """D = c_skip x + c_out F(c_in x, ln(sigma) / 4) (see the module docstring)."""

    name = "edm"

    def __init__(self, sigma_data: float = 0.5) -> None:
        self.sigma_data = float(sigma_data)

    def inputs(self, process: Any, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = _sigma(process, x, t)
        _, _, c_in = scalings(sigma, self.sigma_data)
        c_noise = sigma.reshape(-1).log() / 4
        return (c_in * x.double()).to(x.dtype), c_noise.float().expand(x.shape[0])

    def denoised(self, process: Any, x: Tensor, t, output: Tensor) -> Denoised:
        sigma = _sigma(process, x, t)
        c_skip, c_out, _ = scalings(sigma, self.sigma_data)
        d = (c_skip * x.double() + c_out * output.double())
        return Denoised(d.to(x.dtype), ((x.double() - d) / sigma).to(x.dtype))

    def target(self, process: Any, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        sigma = _sigma(process, x0, t)
        c_skip, c_out, _ = scalings(sigma, self.sigma_data)
        x_t = x0.double() + sigma * eps.double()
        return ((x0.double() - c_skip * x_t) / c_out).to(x0.dtype)

    def check(self, process: Any) -> str | None:
        return alpha_is_one(process)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sigma_data": self.sigma_data}

    def __repr__(self) -> str:
        return f"EDMPrecond(sigma_data={self.sigma_data:g})"


def check_sigma_data(sigma_data: float) -> float:
    if isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float)) or not math.isfinite(sigma_data) \
            or sigma_data <= 0:
        raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
    return float(sigma_data)
