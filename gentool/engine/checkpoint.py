"""Checkpoints that lose nothing and never execute code when loaded.

A checkpoint is a ``torch.save`` file of tensors and plain Python values only,
loaded with ``torch.load(weights_only=True)``. It is written atomically: to a
temporary file in the same folder, flushed and fsynced, then renamed over the
final name, so a crash leaves either the old or the new file, never half of one.
Files are ``checkpoints/step_00001000.pt`` in the run directory; ``best.pt``
(the best evaluation so far) sits beside them but never counts as the latest.
A file that fails to load is renamed ``*.pt.corrupt`` when training resumes,
so it can neither be resumed from nor crowd a good checkpoint out of the last N.
"""

from __future__ import annotations

import json

import os
import re
import shutil
import time
import tomllib
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from gentool.atomic import (  # noqa: F401 - atomic_save, tensor_checksum and CHECKSUM are re-exported
    CHECKSUM, atomic_save, atomic_write, checksum_matches, tensor_checksum, with_checksum)
from gentool.errors import GentoolError
from gentool.latent import LatentError
from gentool.recipe import load_recipe
from gentool.run import Run, build

CHECKPOINT_DIR = "checkpoints"
BEST = "best.pt"
_NAME = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(GentoolError, RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupt, not ours)."""


def check_parameterisation(run: "Run", recorded: Any, source: Path) -> None:
    """The weights were trained to output what the run's parameterisation reads (its name, stored with them)."""
    if not isinstance(recorded, dict) or "name" not in recorded:
        return  # written before parameterisations were recorded: the recipe alone says
    now = run.model.parameterisation
    if str(recorded["name"]) != str(now.name):
        raise CheckpointError(f"{source}: its network was trained to output {recorded['name']!r}, but the run's "
                              f"objective reads {now.name!r} ({type(now).__name__}); load it with the recipe (and "
                              "the plugin version) it was trained with")


def load_weights(run: "Run", model: dict[str, Any], ema: dict[str, Any] | None, source: Path) -> None:
    """Load ``model`` (and ``ema``, else ``model``) into ``run``; weights that do not fit its recipe are named."""
    mine = run.model.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)}, recipe {tuple(mine[k].shape)}" for k, v in model.items()
             if k in mine and tuple(v.shape) != tuple(mine[k].shape)]
    missing, unexpected = sorted(set(mine) - set(model)), sorted(set(model) - set(mine))
    if wrong or missing or unexpected:
        parts = [f"{len(wrong)} tensor(s) of another shape ({'; '.join(wrong[:3])}{'; ...' if len(wrong) > 3 else ''})"
                 if wrong else "",
                 f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
                 if missing else "",
                 f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})"
                 if unexpected else ""]
        raise CheckpointError(
            f"{source}: its weights do not fit the model of the recipe: {', '.join(p for p in parts if p)}. "
            "Was the recipe changed after training (e.g. --set denoiser....)? Load it with the recipe it was "
            "trained with")
    run.model.load_state_dict(model)
    if run.ema is not None:
        run.ema.load_state_dict(ema or model)


def restore_latent(run, state: dict[str, Any], source: Any, *, strict: bool) -> None:
    """Take the latent scale factor a checkpoint recorded; other autoencoder weights than it was trained with
    stop a resumed run (``strict``) and are warned of when loading one."""
    problem = run.space.restore(state.get("latent"), source)
    if problem and strict:
        raise LatentError(f"{problem}; resuming would train on other latents. Restore the autoencoder's weights, "
                          "or train into another run (--set run.name=...)")
    if problem:
        warnings.warn(problem, stacklevel=3)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def best_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / BEST


def step_of(path: Path) -> int:
    """The step in a checkpoint's file name."""
    m = _NAME.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path}: not a step_NNNNNNNN.pt checkpoint name")
    return int(m.group(1))


def run_dir_of(path: Path) -> Path:
    """The run directory a checkpoint file belongs to."""
    path = Path(path)
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run directory, oldest step first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def verify_checksum(state: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError when the tensors of ``state`` no longer match the checksum saved with them."""
    if not checksum_matches(state):
        raise CheckpointError(f"{path}: corrupt checkpoint: its tensors do not match the checksum saved with them "
                              "(a flipped bit on the disk or in a copy)")


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write a checkpoint atomically, with a checksum of its tensors that loading verifies."""
    return atomic_save(with_checksum(state), path)


def atomic_copy(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    def write(f):
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)

    return atomic_write(dst, write)


def clean_partial(run_dir: Path) -> list[Path]:
    """Delete temporary files left by a write that a crash interrupted (in ``checkpoints/`` and its subfolders).

    A temporary file names the PID that writes it (``.<name>.<random>.<pid>.tmp``);
    one whose process is still alive is another writer's file in flight and is
    left alone (the run lock already keeps a second writer out; this is the
    second guard).
    """
    folder = Path(run_dir) / CHECKPOINT_DIR  # and its subfolders: the post-hoc EMA snapshots of phema/
    found = [*folder.glob(".*.tmp"), *folder.glob("*/.*.tmp")] if folder.is_dir() else []
    stale = [p for p in found if not _in_flight(p)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _in_flight(path: Path) -> bool:
    """Is ``path`` a temporary file that a live process other than this one is writing?"""
    pid = path.name.rsplit(".", 2)[-2] if path.name.count(".") >= 3 else ""
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def quarantine(path: Path) -> Path:
    """Rename a bad checkpoint to ``*.corrupt`` so it is never picked again."""
    path = Path(path)
    target = path.with_name(path.name + ".corrupt")
    os.replace(path, target)
    return target


def archive(run_dir: Path) -> Path | None:
    """Move a run's checkpoints aside (``checkpoints.replaced-<time>``) before starting over."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return None
    target = folder.with_name(f"{CHECKPOINT_DIR}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(folder, target)
    return target


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); a bad file raises CheckpointError."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, unpickling refused, ...
        raise CheckpointError(f"{path}: unreadable checkpoint ({_reason(exc)})") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{path}: not a gentool checkpoint (no model weights or step)")
    verify_checksum(state, path)
    return state


def _reason(exc: Exception) -> str:
    """One line on why torch.load failed (its own messages run to a page)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    refused = [line for line in lines if line.startswith("WeightsUnpickler error")]
    if refused:
        return f"it holds objects other than tensors and plain values, never loaded by gentool: {refused[0][:200]}"
    if type(exc).__name__ == "UnpicklingError":  # torch's text goes on to suggest weights_only=False: never
        return "not a PyTorch checkpoint, or a damaged one: it could not be unpickled"
    return f"truncated, damaged or not a checkpoint: {type(exc).__name__}: {lines[0][:200] if lines else 'no detail'}"


def latest_good(
    run_dir: Path,
    *,
    on_bad: Callable[[str], None] | None = None,
    quarantine_bad: bool = False,
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads; bad newer ones are reported and skipped.

    Each bad file is reported through ``on_bad`` (default: a warning) with its
    path and what is wrong; ``quarantine_bad`` also renames it ``*.corrupt``.
    """
    report = on_bad or (lambda message: warnings.warn(message, stacklevel=3))
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            moved = f"; renamed it {quarantine(path).name}" if quarantine_bad else ""
            report(f"{exc}; falling back to the previous checkpoint{moved}")
    return None


def prune(run_dir: Path, keep_last: int, milestone_every: int = 0) -> None:
    """Delete all but the ``keep_last`` newest checkpoints (milestones are kept)."""
    paths = list_checkpoints(run_dir)
    for path in paths[: max(len(paths) - keep_last, 0)]:
        step = int(_NAME.match(path.name).group(1))
        if milestone_every and step % milestone_every == 0:
            continue
        path.unlink(missing_ok=True)


def restore_latest(run: "Run", path: Path | None = None, state: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Load weights into ``run`` from ``path`` (its ``state`` if already read) or the newest good checkpoint of its run."""
    if path is not None:
        found: tuple[Path, dict[str, Any]] | None = (Path(path), state if state is not None else load_checkpoint(path))
    else:
        found = latest_good(run.run_dir)
    if found is None:
        return None
    path, state = found
    check_parameterisation(run, state.get("parameterisation"), path)
    load_weights(run, state["model"], state.get("ema"), path)
    restore_latent(run, state, path, strict=False)
    run.step = int(state["step"])
    run.checkpoint = path
    return state


def load_exported(path: Path, *, device=None, overrides: list[str] = ()) -> "Run":
    """Load a ``gentool export`` safetensors file (EMA weights + recipe metadata)."""
    from safetensors import safe_open  # safetensors loads only for an exported file
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        weights = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    if "recipe" not in meta:
        raise CheckpointError(f"{path}: no gentool recipe in its metadata; was it written by `gentool export`?")
    recipe = load_recipe(path, data=tomllib.loads(meta["recipe"]), overrides=list(overrides))
    recipe.run.output_dir, recipe.run.name = str(path.parent), path.stem
    run = build(recipe, device=device)
    try:
        recorded = json.loads(meta["parameterisation"]) if "parameterisation" in meta else None
    except ValueError:
        recorded = None
    check_parameterisation(run, recorded, path)
    load_weights(run, weights, None, path)
    if "latent" in meta:  # the scale factor and the autoencoder's weights of a latent run
        restore_latent(run, {"latent": json.loads(meta["latent"])}, path, strict=False)
    run.step = int(meta.get("step", 0))
    run.checkpoint = path
    return run
