"""Where and how the networks run: the device (``[run] device``) and torch.compile (``[run] compile``).

Shared by building a run (:mod:`gentool.run`), training (:mod:`gentool.engine.accel`),
sampling (:func:`gentool.sampling.make_fast_eps_fn`) and ``gentool bench``, so
the four resolve the same settings the same way.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import Tensor, nn

from gentool.errors import UsageError

#: ``GENTOOL_COMPILE_BACKEND`` picks torch.compile's backend when none is given
#: (default inductor; "aot_eager" or "eager" help tell a compiler problem from a model problem).
COMPILE_BACKEND_ENV = "GENTOOL_COMPILE_BACKEND"


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"{spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {spec!r} asked for, but CUDA is not available here; use device = \"auto\" or \"cpu\"")
    return device


def compile_default(setting: bool | str, device: torch.device) -> bool:
    """Resolve ``[run] compile``: ``"auto"`` compiles on CUDA only (inductor on
    the CPU needs minutes of C++ compilation for a U-Net)."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


def compile_backend(backend: str | None = None) -> str:
    """``backend``, else ``$GENTOOL_COMPILE_BACKEND``, else ``"inductor"``."""
    return backend or os.environ.get(COMPILE_BACKEND_ENV) or "inductor"


def compile_denoiser(denoiser: nn.Module, *, mode: str | None = None, backend: str | None = None,
                     fullgraph: bool = False) -> Callable[..., Tensor]:
    """``torch.compile`` the denoiser with fixed shapes (``dynamic=False``).

    ``mode``: ``None`` (default), ``"max-autotune-no-cudagraphs"`` (slower to
    compile, sometimes faster kernels) or ``"reduce-overhead"`` (CUDA graphs;
    for inference, see :func:`gentool.sampling.make_fast_eps_fn`).
    ``backend="aot_eager"`` traces forward and backward without generating
    code (the tests use it).
    """
    return torch.compile(denoiser, mode=mode, backend=compile_backend(backend), dynamic=False, fullgraph=fullgraph)
