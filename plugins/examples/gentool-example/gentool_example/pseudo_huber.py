"""A training objective: the pseudo-Huber loss (Song and Dhariwal 2023, sec. 3.3)."""

import math
from typing import Literal

import torch


class PseudoHuber:
    """Uniform timesteps and Gaussian noise as in DDPM; loss sqrt(||out - target||^2 + c^2) - c per image."""

    def __init__(self, prediction: str, c: float) -> None:
        self.prediction, self.c = prediction, c

    def draw(self, diffusion, x0, generator):
        t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        return t, noise

    def loss(self, net, diffusion, x0, labels, t, noise):
        x_t = diffusion.q_sample(x0, t, noise)
        target = diffusion.target(x0, t, noise, self.prediction).float()
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
