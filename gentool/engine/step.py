"""One training batch's loss through the recipe's objective: the train loop, ``gentool bench`` and the test loss.

The objective (:class:`gentool.Objective`, the ``[objective]`` table) draws the
timesteps and the noise and computes the per-example loss; the engine only
supplies the network, under bf16 autocast where asked, returning float32.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from gentool.diffusion import Diffusion


def float_net(net: Callable[..., Tensor], autocast: bool | torch.dtype, device_type: str) -> Callable[..., Tensor]:
    """``net(x_t, t, labels)`` under autocast (``True``: bf16, or a dtype such as ``torch.float16``), as float32."""
    dtype = autocast if isinstance(autocast, torch.dtype) else torch.bfloat16
    enabled = isinstance(autocast, torch.dtype) or bool(autocast)

    def call(x_t: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        with torch.autocast(device_type=device_type, dtype=dtype, enabled=enabled):
            out = net(x_t, t, labels)
        return out.float()

    return call


def objective_loss(
    objective: Any,
    net: Callable[..., Tensor],
    diffusion: Diffusion,
    x0: Tensor,
    labels: Tensor | None,
    generator: torch.Generator | None,
    *,
    autocast: bool | torch.dtype = False,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The mean loss over a batch and the objective's extra scalars.

    ``t`` and ``noise`` come from ``objective.draw(diffusion, x0, generator)``
    unless given (the train loop draws them once for all micro-batches).
    """
    if t is None or noise is None:
        t, noise = objective.draw(diffusion, x0, generator)
    per, extras = objective.loss(float_net(net, autocast, x0.device.type), diffusion, x0, labels, t, noise)
    return per.mean(), extras
