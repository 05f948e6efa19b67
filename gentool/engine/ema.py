"""Exponential moving average of the weights (parameters only; buffers are copied, never averaged).

The diffusion schedule is not part of the model (see :class:`gentool.Diffusion`),
so its buffers can never be averaged by accident.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def ema_decay(decay: float, num_updates: int, warmup: bool = True) -> float:
    """The decay for update ``num_updates`` (0-based): min(decay, (1 + n) / (10 + n)) with warm-up.

    The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates)
    lets the average forget the random initialisation quickly early on.
    """
    if warmup:
        return min(decay, (1.0 + num_updates) / (10.0 + num_updates))
    return decay


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, gate: Tensor | None = None) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta for parameters; buffers are copied.

    ``gate`` (a 0-dim bool device tensor) makes the update a no-op where it is
    false, without the host reading it (a skipped non-finite step on the GPU).
    """
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("EMA and model have different parameters")
    if gate is None:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    elif params:  # theta_ema += gate * (1 - decay) * (theta - theta_ema): three multi-tensor kernels, no sync
        weight = gate.to(params[0].dtype) * (1.0 - decay)
        deltas = torch._foreach_sub(params, ema_params)
        torch._foreach_mul_(deltas, weight)
        torch._foreach_add_(ema_params, deltas)
    for eb, b in zip(ema.buffers(), model.buffers()):  # e.g. normalisation statistics
        eb.copy_(b)
