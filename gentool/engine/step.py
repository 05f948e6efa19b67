"""One training batch's loss through the recipe's objective: the train loop, ``gentool bench`` and the test loss.

The objective (:class:`gentool.Objective`, the ``[objective]`` table) draws the
times and the noise and computes the per-example loss; the engine only
supplies the network at time t (through the parameterisation's inputs), under
bf16 autocast where asked, returning float32.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from gentool.parameterisation import call_network, parameterisation_of
from gentool.process import Process


def float_net(net: Callable[..., Tensor], autocast: bool | torch.dtype, device_type: str,
              process: Process | None = None, param: Any = None) -> Callable[..., Tensor]:
    """``net(x_t, t, labels)`` under autocast (``True``: bf16, or a dtype such as ``torch.float16``), as float32.

    With ``process`` and ``param`` the network is called through the parameterisation's ``inputs``
    (e.g. EDM's c_in x_t and c_noise); for the classic ones on the discrete chain they are (x_t, t) themselves.
    """
    dtype = autocast if isinstance(autocast, torch.dtype) else torch.bfloat16
    enabled = isinstance(autocast, torch.dtype) or bool(autocast)
    at = call_network(net, process, param) if process is not None and param is not None else net

    def call(x_t: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        with torch.autocast(device_type=device_type, dtype=dtype, enabled=enabled):
            out = at(x_t, t, labels)
        return out.float()

    return call


def objective_loss(
    objective: Any,
    net: Callable[..., Tensor],
    process: Process,
    x0: Tensor,
    labels: Tensor | None,
    generator: torch.Generator | None,
    *,
    autocast: bool | torch.dtype = False,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The mean loss over a batch and the objective's extra scalars.

    ``t`` and ``noise`` come from ``objective.draw(process, x0, generator)``
    unless given (the train loop draws them once for all micro-batches).
    """
    if t is None or noise is None:
        t, noise = objective.draw(process, x0, generator)
    net = float_net(net, autocast, x0.device.type, process, parameterisation_of(objective))
    per, extras = objective.loss(net, process, x0, labels, t, noise)
    return per.mean(), extras
