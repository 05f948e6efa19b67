"""An autoencoder's files: weights and checkpoints as safetensors (written atomically, never unpickled).

A ``kl`` autoencoder's folder (its ``path``) holds

* ``autoencoder.safetensors``: the trained weights; metadata: ``format``,
  ``config`` (the architecture options as JSON, checked against the recipe's
  when loading), ``step``, ``data`` (the ``[data]`` table it learnt from);
* ``checkpoints/step_<N>.safetensors``: weights and Adam's moments
  (``model.<name>``, ``optim.<i>.<moment>``) to resume training from;
* ``metrics.jsonl`` (the losses while training) and ``reconstruction.json``
  and ``reconstruction.png`` (the test split's reconstruction error).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gentool import atomic_write_bytes

WEIGHTS = "autoencoder.safetensors"
CHECKPOINTS = "checkpoints"
FORMAT = "gentool-autoencoder/1"


def state_fingerprint(module: nn.Module) -> str:
    """sha256 of the module's tensors (names, shapes, dtypes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> Path:
    """``tensors`` as a safetensors file at ``path``, atomically; metadata values are written as JSON."""
    from safetensors.torch import save

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    data = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=meta)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, data)


def load_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file; ``ValueError`` (one line) when it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - not safetensors (a pickle is never unpickled), truncated
        raise ValueError(f"{path}: not a safetensors file of an autoencoder ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None


def config_difference(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``["channels: file 32, recipe 64", ...]``: where the saved architecture differs from the recipe's."""
    return [f"{k}: file {saved.get(k)!r}, recipe {wanted.get(k)!r}" for k in sorted(set(saved) | set(wanted))
            if saved.get(k) != wanted.get(k)]


def checkpoint_files(folder: Path) -> list[Path]:
    """``checkpoints/step_<N>.safetensors`` of an autoencoder folder, oldest first."""
    found = []
    for p in (Path(folder) / CHECKPOINTS).glob("step_*.safetensors"):
        digits = p.stem.removeprefix("step_")
        if digits.isdigit():
            found.append((int(digits), p))
    return [p for _, p in sorted(found)]
