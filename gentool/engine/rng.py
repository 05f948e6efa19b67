"""Every random-number state a training step can touch, saved and restored exactly.

torch's global CPU generator (dropout, label dropout, random flips), the CUDA
generator of this process's device, the step generator (timesteps and noise),
Python's ``random`` and NumPy's global generator. States are stored as
tensors, ints and tuples only, so a checkpoint loads with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import torch

try:  # numpy is optional; a data source or metric may use its global generator
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def rank_seed(seed: int, rank: int) -> int:
    """The step generator's seed on ``rank`` (rank 0: the recipe's seed itself)."""
    return seed + 1_000_003 * rank


def seed_all(seed: int, generator: torch.Generator | None = None) -> None:
    """Seed torch's global generators, ``random``, NumPy and ``generator`` from one number."""
    torch.manual_seed(seed)
    random.seed(seed)
    if np is not None:
        np.random.seed(seed % 2**32)
    if generator is not None:
        generator.manual_seed(seed)


def _numpy_state() -> dict[str, Any] | None:
    if np is None:
        return None
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_state(state: dict[str, Any] | None) -> None:
    if np is None or state is None:
        return
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["gauss"]))


def capture(generator: torch.Generator | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """The current global RNG states, plus ``generator``'s (if given)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if generator is not None:
        state["generator"] = generator.get_state()
        state["generator_device"] = generator.device.type
    return state


def restore(state: dict[str, Any], generator: torch.Generator | None = None,
            device: torch.device | None = None) -> list[str]:
    """Put back what :func:`capture` saved; returns notes on what could not be restored."""
    notes = []
    torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    _set_numpy_state(state.get("numpy"))
    if device is not None and device.type == "cuda":
        if "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], device)
        else:
            notes.append("the checkpoint has no CUDA RNG state (saved on the CPU); CUDA draws start afresh")
    if generator is not None and "generator" in state:
        if state.get("generator_device", generator.device.type) == generator.device.type:
            generator.set_state(state["generator"])
        else:
            notes.append(f"the step generator was saved on {state['generator_device']} and cannot be "
                         f"restored on {generator.device.type}; timesteps and noise are drawn afresh")
    return notes


@contextlib.contextmanager
def preserved(device: torch.device | None = None) -> Iterator[None]:
    """Run a block (sampling, evaluation) without changing any global RNG state."""
    state = capture(None, device)
    try:
        yield
    finally:
        restore(state, None, device)
