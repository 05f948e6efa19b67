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

torch hub can also run code: ``torch.hub.load`` imports a repository's
``hubconf.py``, from a download or from the cache ``$TORCH_HOME/hub/<owner>_<repo>_<branch>``
(torch-fidelity's ``dinov2-*`` extractors do). Inside :func:`safe_torch_load`
it raises :class:`HubCodeRefused` before anything is imported.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.hub

from gentool.errors import GentoolError

_PATCH = threading.RLock()  # torch.load is one global: one patch at a time


class WeightsFileError(GentoolError, ValueError):
    """A weights file that cannot be used: unreadable, not a state dict, or holding more than tensors (never unpickled)."""


class HubCodeRefused(GentoolError, ValueError):
    """torch hub was asked to import a repository's Python code (``hubconf.py``), which gentool never runs."""


def _refuse_hub_code(repo_or_dir: Any, *args: Any, **kwargs: Any) -> Any:
    raise HubCodeRefused(
        f"it needs torch hub to import and run the Python code of {str(repo_or_dir)!r} (its hubconf.py, "
        f"downloaded or cached under {torch.hub.get_dir()}); gentool never runs code from a download or a cache, "
        "and no packaged copy is installed")


@contextlib.contextmanager
def safe_torch_load(preloaded: dict[str | Path, Any] | None = None) -> Iterator[None]:
    """Within: ``torch.load`` is ``weights_only=True``; a path in ``preloaded`` returns its already-read contents.

    ``torch.hub.load``, ``list`` and ``help`` (which import a repository's code) raise :class:`HubCodeRefused`.
    """
    served = {os.path.realpath(path): state for path, state in (preloaded or {}).items()}
    with _PATCH:
        original, hub = torch.load, (torch.hub.load, torch.hub.list, torch.hub.help)

        def load(f, *args: Any, **kwargs: Any) -> Any:
            if isinstance(f, (str, os.PathLike)) and os.path.realpath(f) in served:
                return served[os.path.realpath(f)]
            kwargs["weights_only"] = True
            return original(f, *args, **kwargs)

        torch.load = load
        torch.hub.load = torch.hub.list = torch.hub.help = _refuse_hub_code
        try:
            yield
        finally:
            torch.load = original
            torch.hub.load, torch.hub.list, torch.hub.help = hub


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
