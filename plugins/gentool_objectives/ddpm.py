"""``ddpm``: L_simple of Ho et al. (2020), eq. 14 and Algorithm 1.

Timesteps are 0-based: ``t`` in ``0..T-1`` is the paper's ``t + 1``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


class DDPMObjective:
    """t ~ U{0..T-1}, eps ~ N(0, I), x_t = q_sample(x0, t, eps); loss = mean over pixels of |target - net(x_t, t)|^p."""

    learned_variance = False

    def __init__(self, prediction: str, loss: str) -> None:
        self.prediction, self.kind = prediction, loss

    def draw(self, diffusion, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Algorithm 1, lines 3-4: one t per example, then the noise (in this order, from ``generator``)."""
        t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        return t, noise

    def loss(self, net, diffusion, x0: Tensor, labels: Tensor | None, t: Tensor,
             noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-example L_simple (eq. 14; the target is eps, x0 or v per ``prediction``), float32 ``[B]``."""
        x_t = diffusion.q_sample(x0, t, noise)  # eq. 4
        out = net(x_t, t, labels)
        diff = out.float() - diffusion.target(x0, t, noise, self.prediction).float()
        per = diff.square() if self.kind == "l2" else diff.abs()
        return per.flatten(1).mean(1), {}

    def __repr__(self) -> str:
        return f"DDPMObjective(prediction={self.prediction!r}, loss={self.kind!r})"


def ddpm(*, prediction: Literal["eps", "x0", "v"] = "eps", loss: Literal["l2", "l1"] = "l2") -> DDPMObjective:
    """L_simple (Ho et al. 2020, eq. 14): uniform timesteps, Gaussian noise, unweighted regression.

    Args:
        prediction: what the network outputs: ``"eps"`` the noise (Ho et al.),
            ``"x0"`` the clean image, ``"v"`` sqrt(abar_t) eps - sqrt(1 - abar_t) x0
            (Salimans and Ho 2022). Samplers convert it to a noise prediction.
        loss: ``"l2"`` the squared error of eq. 14, or ``"l1"`` the absolute error.
    """
    return DDPMObjective(prediction, loss)
