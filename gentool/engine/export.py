"""``gentool export``: a run's EMA weights as one safetensors file that carries its recipe.

The file holds the EMA weights (the online weights when the run has no EMA)
and, in its metadata, the resolved recipe TOML (``"recipe"``), the step
(``"step"``) and which weights these are (``"weights"``); a latent run's
also its scale factor and autoencoder fingerprint (``"latent"``). It loads with
:func:`gentool.load_run` (and so with ``gentool sample``) through
:func:`gentool.engine.checkpoint.load_exported`; like every gentool
checkpoint it can never run code when loaded.
"""

from __future__ import annotations

import json

from pathlib import Path
from typing import Callable

from gentool.engine import checkpoint as ckpt
from gentool.run import RESOLVED_RECIPE

FORMAT = "gentool-export/1"


def _source_state(source: Path, on_bad: Callable[[str], None] | None):
    if source.is_dir():
        found = ckpt.latest_good(source, on_bad=on_bad)
        if found is None:
            raise FileNotFoundError(f"{source}: no readable checkpoint in {source / ckpt.CHECKPOINT_DIR}")
        return found[0], found[1], source
    return source, ckpt.load_checkpoint(source), ckpt.run_dir_of(source)


def export_weights(source: str | Path, out: str | Path | None = None, *,
                   on_bad: Callable[[str], None] | None = None) -> Path:
    """Write ``source``'s (a run directory or checkpoint file) EMA weights to ``out``; returns the path.

    ``out`` defaults to ``RUN_DIR/<run name>_step<step>.safetensors``.
    """
    source = Path(source)
    if not source.exists():
        from gentool.paths import did_you_mean

        raise FileNotFoundError(f"{source}: no such run directory or checkpoint{did_you_mean(source)}")
    path, state, run_dir = _source_state(source, on_bad)
    recipe = state.get("recipe")
    if not recipe:
        recipe_file = run_dir / RESOLVED_RECIPE
        if not recipe_file.exists():
            raise FileNotFoundError(f"{path} carries no recipe and {recipe_file} does not exist")
        recipe = recipe_file.read_text(encoding="utf-8")
    kind = "ema" if state.get("ema") is not None else "model"
    # contiguous (channels-last weights are not) and unshared copies, as safetensors requires
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state[kind].items()}
    step = int(state["step"])
    out = Path(out) if out is not None else run_dir / f"{run_dir.name}_step{step:08d}.safetensors"
    metadata = {"format": FORMAT, "recipe": recipe, "step": str(step), "weights": kind, "source": str(path)}
    if isinstance(state.get("parameterisation"), dict):  # what the network outputs, checked when it loads
        metadata["parameterisation"] = json.dumps(state["parameterisation"])
    if state.get("latent") and state["latent"].get("fingerprint"):  # a latent run: what decoding needs
        metadata["latent"] = json.dumps(state["latent"])
    ckpt.atomic_write(out, lambda f: f.write(_serialise(tensors, metadata)))
    return out


def _serialise(tensors, metadata) -> bytes:
    from safetensors.torch import save  # loads only when exporting

    return save(tensors, metadata=metadata)
