"""Weights files of feature extractors, read safely and once: no code ever runs from a weights file.

torch-fidelity reads its weights with ``torch.load(weights_only=False)``, both a
local file (``feature_extractor_weights_path``) and the file torch hub caches
(``$TORCH_HOME/hub/checkpoints/...``): an unpickled object there can run code.
:func:`safe_torch_load` is the one place gentool closes that: while it is
active, every ``torch.load`` is ``weights_only=True`` (tensors and plain values
only), and a file that gentool has already read and checked is served from
memory, so the bytes checked are the bytes used (a file swapped in between is
never read). Every feature extractor is built inside it
(:func:`gentool.evaluation.features.build_extractor`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import torch

from gentool.errors import GentoolError

_PATCH = threading.RLock()  # torch.load is one global: one patch at a time


class WeightsFileError(GentoolError, ValueError):
    """A weights file that cannot be used: unreadable, not a state dict, or holding more than tensors (never unpickled)."""


@contextlib.contextmanager
def safe_torch_load(preloaded: dict[str | Path, Any] | None = None) -> Iterator[None]:
    """Within: ``torch.load`` is ``weights_only=True``; a path in ``preloaded`` returns its already-read contents."""
    served = {os.path.realpath(path): state for path, state in (preloaded or {}).items()}
    with _PATCH:
        original = torch.load

        def load(f, *args: Any, **kwargs: Any) -> Any:
            if isinstance(f, (str, os.PathLike)) and os.path.realpath(f) in served:
                return served[os.path.realpath(f)]
            kwargs["weights_only"] = True
            return original(f, *args, **kwargs)

        torch.load = load
        try:
            yield
        finally:
            torch.load = original


def read_state_dict(path: str | Path, *, what: str = "weights") -> dict[str, Any]:
    """Read a state dict once, safely: ``.safetensors`` or ``torch.load(weights_only=True)`` on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refused, truncated, not a weights file
        if "Weights only load failed" in str(exc) or type(exc).__name__ == "UnpicklingError":
            raise WeightsFileError(f"{path}: refused: it holds objects other than tensors and plain values, "
                                     "which gentool never unpickles (it could run code); use a plain state dict")
        raise WeightsFileError(f"{path}: not a {what} file ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:200]})") from None
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path}: not a state dict (a {type(state).__name__})")
    return state
