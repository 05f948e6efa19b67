"""Speed on the GPU for training: bf16 autocast, channels-last, DDP and torch.compile.

:func:`prepare_for_speed` wraps a :class:`~gentool.model.DiffusionModel` so the
denoiser runs channels-last and (optionally) compiled, sharing the model's
parameters; nothing changes the maths (``tests/test_fast_path.py`` checks the
loss and gradients against the plain model). :func:`prepare` builds the module
the training forward pass goes through from it (the same fast path ``gentool
bench`` times): the conditioner runs eagerly, the denoiser channels-last and,
per ``[run] compile``, compiled; under torchrun DistributedDataParallel wraps
it. ``run.model`` itself stays the plain module: checkpoints save its
``state_dict`` (no ``_orig_mod.`` or ``module.`` prefixes), the EMA averages
its parameters (the very tensors the compiled module trains) and sampling
and evaluation use the EMA copy, uncompiled.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from gentool.devices import COMPILE_BACKEND_ENV, compile_backend, compile_default, compile_denoiser
from gentool.engine.distributed import Dist

__all__ = ["COMPILE_BACKEND_ENV", "FastModel", "Prepared", "prepare", "prepare_for_speed", "uses_bf16"]


class FastModel(nn.Module):
    """``model(x_t, t, labels)`` through a channels-last, optionally compiled denoiser.

    Holds the original :class:`~gentool.model.DiffusionModel` (same parameters,
    so an optimiser built on either trains both) and calls its
    :meth:`~gentool.model.DiffusionModel.embed`, so the conditioning is the
    model's own. The conditioner runs eagerly: its label dropout draws from
    torch's global RNG, whose saved state makes a resumed run exact; a compiled
    graph would draw from its own generator.
    """

    def __init__(self, model: nn.Module, denoiser: Callable[..., Tensor], channels_last: bool) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_denoiser", denoiser)  # compiled or plain; not registered twice
        self.channels_last = channels_last

    @property
    def prediction(self) -> str:
        return self.model.prediction

    @property
    def conditioner(self) -> nn.Module | None:
        return self.model.conditioner

    def forward(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        cond = self.model.embed(labels, x_t.shape[0], x_t.device)
        if self.channels_last and x_t.ndim == 4:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        return self._denoiser(x_t, t, cond).contiguous()  # the loss and samplers see ordinary strides


def prepare_for_speed(
    model: nn.Module,
    device: torch.device | str,
    *,
    channels_last: bool = True,
    compile: bool | str = "auto",
    mode: str | None = None,
    backend: str | None = None,
) -> FastModel:
    """Put ``model`` on ``device`` in its fast form and return the wrapper to call.

    Moves the weights to ``device`` and, with ``channels_last``, converts every
    4-D weight to the channels-last layout in place (values unchanged; a
    state dict saved afterwards loads anywhere). Turns on TF32 matmuls for any
    remaining fp32 work on CUDA. Use the returned :class:`FastModel` for the
    forward pass and ``model`` for the optimiser, EMA and checkpoints. The
    training engine (:func:`prepare`) and ``gentool bench`` both go through
    here, so the bench times what ``gentool run`` trains.
    """
    device = torch.device(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv once
    denoiser = getattr(model, "denoiser", model)
    run = compile_denoiser(denoiser, mode=mode, backend=backend) if compile_default(compile, device) else denoiser
    return FastModel(model, run, channels_last)


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
    fp16: bool = False  # float16 autocast; the train loop scales the loss (engine/loss_scale.py)

    @property
    def autocast(self) -> bool | torch.dtype:
        """The forward pass's autocast: ``torch.float16``, ``True`` (bf16) or ``False`` (fp32)."""
        return torch.float16 if self.fp16 else self.bf16

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
    return Prepared(net, ddp, uses_bf16(run), cuda, compiled, fp16=run.recipe.train.fp16_on(run.device))
