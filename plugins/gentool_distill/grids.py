"""Times as the distillations use them: a grid of the process as a tensor, alpha and sigma with the data end."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def time_tensor(process: Any, times: list[float], device: torch.device) -> Tensor:
    """``times`` as a tensor: int64 steps on the discrete chain, float32 elsewhere."""
    dtype = torch.long if getattr(process, "discrete", False) else torch.float32
    return torch.tensor(times, dtype=dtype, device=device)


def data_end(process: Any) -> float:
    """The data's time as a grid lists it: -1 on the discrete chain, ``t_data`` elsewhere."""
    return int(process.t_data) if getattr(process, "discrete", False) else float(process.t_data)


def nearest(t: Tensor, grid: Tensor) -> Tensor:
    """The index into ``grid`` of the grid time nearest each of ``t`` ``[B]`` (exact for times drawn from it)."""
    return (t.double()[:, None] - grid.double()[None, :]).abs().argmin(1)


def scales(process: Any, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """alpha(t) and sigma(t) shaped ``[B, 1, ..., 1]`` like ``x``; (1, 0) where ``t`` is the data end."""
    at_data = t == data_end(process)
    safe = torch.where(at_data, torch.full_like(t, process.t_max if not process.discrete else int(process.t_max)), t)
    alpha = torch.where(at_data, 1.0, process.alpha(safe).double())
    sigma = torch.where(at_data, 0.0, process.sigma(safe).double())
    shape = (-1, *[1] * (x.ndim - 1))
    return alpha.to(x.dtype).reshape(shape), sigma.to(x.dtype).reshape(shape)
