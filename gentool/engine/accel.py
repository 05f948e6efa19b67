"""Speed on the GPU for training: bf16 autocast, channels-last, DDP and torch.compile.

:func:`prepare` builds the module the training forward pass goes through from
:func:`gentool.fast.prepare_for_speed` (the same fast path ``gentool bench``
times): the conditioner runs eagerly, the denoiser channels-last and, per
``[run] compile``, compiled; under torchrun DistributedDataParallel wraps it.
``run.model`` itself stays the plain module: checkpoints save its
``state_dict`` (no ``_orig_mod.`` or ``module.`` prefixes), the EMA averages
its parameters (the very tensors the compiled module trains) and sampling
and evaluation use the EMA copy, uncompiled.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from gentool.engine.distributed import Dist
from gentool.fast import COMPILE_BACKEND_ENV, compile_backend, compile_default, prepare_for_speed

__all__ = ["COMPILE_BACKEND_ENV", "Prepared", "prepare", "uses_bf16"]


def uses_bf16(run) -> bool:
    """bf16 autocast: asked for, or ``"auto"`` on CUDA."""
    return run.recipe.train.bf16_on(run.device)


@dataclass
class Prepared:
    """The module the training forward pass goes through, and how it was built."""

    net: Callable[..., Tensor]
    ddp: torch.nn.parallel.DistributedDataParallel | None
    bf16: bool
    channels_last: bool
    compiled: bool

    def to_device(self, x: Tensor, device: torch.device) -> Tensor:
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def no_sync(self, sync: bool):
        """DDP's gradient all-reduce only on the last micro-batch of an accumulated step."""
        return contextlib.nullcontext() if sync or self.ddp is None else self.ddp.no_sync()


def prepare(run, dist_info: Dist, log: Callable[[str], None]) -> Prepared:
    """Channels-last on CUDA, torch.compile of the denoiser per ``[run] compile``, DDP when distributed."""
    cuda = run.device.type == "cuda"
    compiled = compile_default(run.recipe.run.compile, run.device)
    mode = run.recipe.run.compile_mode
    if compiled:
        log(f"compiling the denoiser with torch.compile (backend {compile_backend()}, mode {mode}); "
            "the first steps are slow")
    fast = prepare_for_speed(run.model, run.device, channels_last=cuda, compile=compiled,
                             mode=run.recipe.run.torch_compile_mode)
    if cuda and run.ema is not None:
        run.ema.to(memory_format=torch.channels_last)  # the EMA's lerp runs over like-strided tensors
    net: Callable[..., Tensor] = fast
    ddp = None
    if dist_info.enabled:
        index = run.device.index if run.device.index is not None else torch.cuda.current_device() if cuda else None
        ddp = torch.nn.parallel.DistributedDataParallel(fast, device_ids=[index] if cuda else None)
        net = ddp
    return Prepared(net, ddp, uses_bf16(run), cuda, compiled)
