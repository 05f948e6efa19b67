"""AdamW with linear warm-up, an optional decay, and gradient clipping (the DDPM recipe: Ho et al. 2020, App. B)."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor


def use_fused(device: torch.device) -> bool:
    """The fused (single-kernel) AdamW on CUDA; the plain one elsewhere."""
    return device.type == "cuda"


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float,
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters, fused on CUDA."""
    fused = use_fused(device)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused or None)


def lr_at(step: int, lr: float, warmup: int, schedule: str = "constant", total: int = 0) -> float:
    """The learning rate of 0-based ``step``: linear warm-up from lr / warmup to lr, then ``schedule``.

    ``"constant"`` keeps lr; ``"cosine"`` (Loshchilov and Hutter 2017, no restarts) and ``"linear"``
    decay it over the steps after the warm-up, from lr at step ``warmup`` towards 0 at step ``total``:
    with p = (step - warmup) / (total - warmup), lr (1 + cos(pi p)) / 2 or lr (1 - p).
    """
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return lr
    p = min(1.0, max(0.0, (step - warmup) / (total - warmup)))
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "linear":
        return lr * (1.0 - p)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose constant, cosine or linear")


def resume_note(step: int, trained_for: int, total: int, lr: float, warmup: int, schedule: str) -> str | None:
    """One line on what a decaying learning rate does when a run trained for ``trained_for`` steps resumes at
    ``step`` towards another ``total`` (``None`` when nothing changes: a constant rate, or the same total)."""
    if schedule == "constant" or trained_for in (0, total) or step >= total:
        return None
    last, next_ = lr_at(max(step - 1, 0), lr, warmup, schedule, trained_for), lr_at(step, lr, warmup, schedule, total)
    return (f"lr_schedule = \"{schedule}\" now decays to 0 at train.steps = {total}, not {trained_for}: the learning "
            f"rate goes from {last:.3g} (step {step}) to {next_:.3g} (step {step + 1}), where the {total}-step "
            "curve is")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float) -> Tensor:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping); returns the norm before clipping.

    The norm stays a device tensor: reading it is the caller's choice of when to sync.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def is_finite(*values: Tensor) -> Tensor:
    """A 0-dim bool tensor on the values' device: all finite (no host sync)."""
    ok = torch.isfinite(values[0]).all()
    for v in values[1:]:
        ok = ok & torch.isfinite(v).all()
    return ok


@torch.no_grad()
def align_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each optimiser state tensor its parameter's memory layout (e.g. channels-last).

    A state loaded from a checkpoint keeps the layout it was saved with; fused
    and foreach kernels want moments laid out like their parameters.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
