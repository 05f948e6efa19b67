"""One training step's loss, shared by the train loop and ``gentool bench``."""

from __future__ import annotations

import torch
from torch import Tensor

from gentool.diffusion import Diffusion


def draw(diffusion: Diffusion, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """t ~ U{0..T-1} per sample and eps ~ N(0, I) (Ho et al. Algorithm 1, lines 3-4)."""
    t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
    return t, noise


def diffusion_loss(
    model: torch.nn.Module,
    diffusion: Diffusion,
    x0: Tensor,
    labels: Tensor | None,
    generator: torch.Generator | None,
    *,
    prediction: str = "eps",
    loss: str = "l2",
    autocast: bool = False,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """The mean L_simple over a batch (Ho et al. Algorithm 1, eq. 14).

    One t per sample, uniform over 0..T-1; eps ~ N(0, I) from ``generator``
    (or the given ``t`` and ``noise``); x_t = q_sample(x0, t, eps);
    loss = |target - model(x_t, t)|^2 averaged. ``autocast`` runs the network
    under bf16 autocast; the loss is fp32.
    """
    if t is None or noise is None:
        t, noise = draw(diffusion, x0, generator)
    x_t = diffusion.q_sample(x0, t, noise)
    with torch.autocast(device_type=x0.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(x_t, t, labels)
    return diffusion.training_loss(out, x0, t, noise, prediction=prediction, loss=loss).mean()
