"""A training objective: the pseudo-Huber loss (Song and Dhariwal 2023, sec. 3.3), on any noise process."""

import math
from typing import Literal

import torch

from gentool import parameterisation_of


class PseudoHuber:
    """Uniform times and Gaussian noise as in DDPM; loss sqrt(||out - target||^2 + c^2) - c per image."""

    def __init__(self, prediction: str, c: float) -> None:
        self.prediction, self.c = prediction, c

    def check(self, process):
        """Any process: x_t = alpha(t) x0 + sigma(t) eps is all this loss needs (None: no objection)."""
        return None

    def draw(self, process, x0, generator):
        if process.discrete:  # the DDPM chain: integer steps 0..T-1
            t = torch.randint(0, int(process.t_max) + 1, (x0.shape[0],), device=x0.device, generator=generator)
        else:  # uniform on (t_data, t_max]
            u = torch.rand((x0.shape[0],), device=x0.device, generator=generator)
            t = process.t_max - (process.t_max - process.t_data) * u
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        return t, noise

    def loss(self, net, process, x0, labels, t, noise):
        shape = (-1, *[1] * (x0.ndim - 1))
        x_t = process.alpha(t).reshape(shape) * x0 + process.sigma(t).reshape(shape) * noise
        target = parameterisation_of(self).target(process, x0, noise, t).float()
        squared = (net(x_t, t, labels) - target).square().flatten(1).sum(1)  # ||out - target||_2^2 per image
        c = self.c or 0.00054 * math.sqrt(x0[0].numel())  # the paper's c for d = C * H * W
        return torch.sqrt(squared + c * c) - c, {"l2": squared.mean().detach()}


def pseudo_huber(*, prediction: Literal["eps", "x0", "v"] = "eps", c: float = 0.0) -> PseudoHuber:
    """Pseudo-Huber loss sqrt(||out - target||^2 + c^2) - c (Song and Dhariwal 2023).

    Quadratic for errors much smaller than c, linear (robust to outliers) for
    larger ones.

    Args:
        prediction: what the network outputs: "eps", "x0" or "v".
        c: the threshold; 0 takes the paper's 0.00054 * sqrt(d), d the
            number of values in one image.
    """
    if c < 0:
        raise ValueError(f"c must not be negative, got {c}")
    return PseudoHuber(prediction, c)
