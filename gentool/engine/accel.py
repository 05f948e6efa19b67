"""Speed on the GPU: bf16 autocast, channels-last, DistributedDataParallel and torch.compile.

:func:`prepare` wraps ``run.model`` for the forward pass of training only.
``run.model`` itself stays the plain module: checkpoints save its
``state_dict`` (no ``_orig_mod.`` or ``module.`` prefixes), the EMA averages
its parameters (the very tensors the compiled module trains) and sampling
and evaluation use the EMA copy, uncompiled.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from gentool.engine.distributed import Dist

#: ``GENTOOL_COMPILE_BACKEND`` picks torch.compile's backend (default inductor;
#: "aot_eager" or "eager" help tell a compiler problem from a model problem).
COMPILE_BACKEND_ENV = "GENTOOL_COMPILE_BACKEND"


def uses_bf16(run) -> bool:
    """bf16 autocast: asked for, or ``"auto"`` on CUDA."""
    precision = run.recipe.train.precision
    return precision == "bf16" or (precision == "auto" and run.device.type == "cuda")


def should_compile(setting: Any, device: torch.device) -> bool:
    """``"auto"`` compiles on CUDA only; ``true``/``false`` force it."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


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
    """Channels-last on CUDA, DDP when distributed, then torch.compile per ``[run] compile``."""
    model, cuda = run.model, run.device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution once
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (outside autocast) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        model.to(memory_format=torch.channels_last)
        if run.ema is not None:
            run.ema.to(memory_format=torch.channels_last)
    net: Any = model
    ddp = None
    if dist_info.enabled:
        index = run.device.index if run.device.index is not None else torch.cuda.current_device() if cuda else None
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[index] if cuda else None)
        net = ddp
    compiled = should_compile(run.recipe.run.compile, run.device)
    if compiled:
        backend = os.environ.get(COMPILE_BACKEND_ENV, "inductor")
        log(f"compiling the model with torch.compile (backend {backend}); the first steps are slow")
        net = torch.compile(net, backend=backend, dynamic=False)
    return Prepared(net, ddp, uses_bf16(run), cuda, compiled)
