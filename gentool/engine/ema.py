"""Exponential moving average of the weights (parameters only, never buffers)."""

from __future__ import annotations

import torch
from torch import nn


def ema_decay(decay: float, num_updates: int, warmup: bool = True) -> float:
    """The decay for update ``num_updates`` (0-based): min(decay, (1 + n) / (10 + n)) with warm-up."""
    if warmup:
        return min(decay, (1.0 + num_updates) / (10.0 + num_updates))
    return decay


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta, for parameters only."""
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("EMA and model have different parameters")
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
