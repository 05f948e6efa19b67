"""Post-hoc EMA on disk: the snapshots training writes, and the checkpoint a reconstruction writes.

Training with ``[train] phema_sigma_rels`` writes, every ``phema_every`` steps
and at its last step, one snapshot per tracked sigma_rel:
``RUN/checkpoints/phema/phema-<sigma_rel>-step_<step>.safetensors`` (the
averaged parameters and the model's buffers; the metadata says sigma_rel,
gamma and step). Each is written atomically while training holds the run's
lock, so a reader sees whole files only.

:func:`reconstruct` combines the snapshots up to a step into the average of
another sigma_rel (:func:`gentool.engine.phema.solve_coefficients`) and writes
it as a checkpoint, ``RUN/checkpoints/phema-<sigma_rel>-step_<step>.pt``
(model and EMA weights both the reconstruction, the resolved recipe, the fit),
which :func:`gentool.load_run`, ``gentool sample``, ``eval`` and ``export`` load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from gentool.atomic import atomic_write_bytes
from gentool.engine.checkpoint import CHECKPOINT_DIR, CheckpointError, save_checkpoint
from gentool.engine.phema import PowerEMA, Solution, gamma_of, solve_coefficients
from gentool.engine.state import FORMAT as CHECKPOINT_FORMAT
from gentool.errors import UsageError
from gentool.run import RESOLVED_RECIPE

PHEMA_DIR = "phema"  # under checkpoints/
FORMAT = "gentool-phema/1"
_NAME = re.compile(r"^phema-(.+)-step_(\d+)\.safetensors$")


@dataclass(frozen=True)
class Snapshot:
    path: Path
    sigma_rel: float
    step: int


@dataclass(frozen=True)
class Reconstruction:
    path: Path  # the checkpoint written
    sigma_rel: float
    gamma: float
    step: int
    inputs: list[Snapshot]
    solution: Solution


def snapshot_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / PHEMA_DIR


def snapshot_path(run_dir: Path, sigma_rel: float, step: int) -> Path:
    return snapshot_dir(run_dir) / f"phema-{float(sigma_rel)!r}-step_{step:08d}.safetensors"  # repr: exact, short


def reconstruction_path(run_dir: Path, sigma_rel: float, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"phema-{float(sigma_rel)!r}-step_{step:08d}.pt"


def write_snapshots(tracker: PowerEMA, run_dir: Path) -> list[Path]:
    """One snapshot file per tracked sigma_rel at ``tracker.step``, each written atomically."""
    buffers = sorted(name for name, _ in tracker.module.named_buffers())
    paths = []
    for i, (sigma_rel, gamma) in enumerate(zip(tracker.sigma_rels, tracker.gammas)):
        metadata = {"format": FORMAT, "sigma_rel": repr(sigma_rel), "gamma": repr(gamma),
                    "step": str(tracker.step), "buffers": json.dumps(buffers)}
        data = _serialise(tracker.snapshot(i), metadata)
        paths.append(atomic_write_bytes(snapshot_path(run_dir, sigma_rel, tracker.step), data))
    return paths


def _serialise(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save  # loads only when a snapshot is written

    return save(tensors, metadata=metadata)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open  # loads only when snapshots are read

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - truncated, not safetensors
        raise CheckpointError(f"{path}: unreadable post-hoc EMA snapshot ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gentool post-hoc EMA snapshot (format {meta.get('format')!r})")
    return meta


def load_snapshot_weights(path: Path) -> dict[str, torch.Tensor]:
    """A snapshot's tensors: the averaged parameters and the buffers (a state dict of the model)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - truncated, not safetensors
        raise CheckpointError(f"{path}: unreadable post-hoc EMA snapshot ({exc})") from None


def list_snapshots(run_dir: Path) -> list[Snapshot]:
    """The run's snapshots, by step and then sigma_rel (sigma_rel and step read from each file)."""
    folder = snapshot_dir(run_dir)
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if _NAME.match(path.name):
            meta = _metadata(path)
            found.append(Snapshot(path, float(meta["sigma_rel"]), int(meta["step"])))
    return sorted(found, key=lambda s: (s.step, s.sigma_rel))


def choose_inputs(snapshots: list[Snapshot], step: int | None, using: Sequence[float] | None,
                  folder: Path) -> tuple[int, list[Snapshot]]:
    """The reconstruction's step (default: the last snapshot's) and the snapshots up to it it combines."""
    if not snapshots:
        raise UsageError(f"{folder}: no post-hoc EMA snapshots; train with [train] phema_sigma_rels = [0.05, 0.1] "
                         "(they are written every phema_every steps and at the last step)")
    steps = sorted({s.step for s in snapshots})
    tracked = sorted({s.sigma_rel for s in snapshots})
    step = steps[-1] if step is None else step
    if step not in steps:
        raise UsageError(f"--step {step}: no snapshot at that step in {folder}; steps: {_some(steps)}")
    unknown = [u for u in (using or []) if u not in tracked]
    if unknown:
        raise UsageError(f"--using {','.join(f'{u:g}' for u in unknown)}: not tracked by this run; tracked "
                         f"sigma_rels: {', '.join(f'{s:g}' for s in tracked)}")
    return step, [s for s in snapshots if s.step <= step and (not using or s.sigma_rel in using)]


def _some(values: list[int]) -> str:
    return ", ".join(map(str, values)) if len(values) <= 8 else f"{', '.join(map(str, values[:4]))}, ..., {values[-1]}"


def reconstruct(run_dir: str | Path, sigma_rel: float, *, step: int | None = None,
                using: Sequence[float] | None = None, out: str | Path | None = None) -> Reconstruction:
    """Reconstruct the power-function EMA of ``sigma_rel`` at ``step`` from the run's snapshots; write a checkpoint.

    ``using`` limits the inputs to the snapshots of those tracked sigma_rels;
    ``out`` defaults to :func:`reconstruction_path`.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        from gentool.paths import did_you_mean

        raise FileNotFoundError(f"{run_dir}: no such run directory{did_you_mean(run_dir)}")
    try:
        gamma = gamma_of(sigma_rel)
    except ValueError as exc:
        raise UsageError(f"--sigma-rel: {exc}") from None
    step, inputs = choose_inputs(list_snapshots(run_dir), step, using, snapshot_dir(run_dir))
    solution = solve_coefficients([s.step for s in inputs], [gamma_of(s.sigma_rel) for s in inputs], step, gamma)
    weights = _combine(inputs, solution.coefficients, step)
    state = {"format": CHECKPOINT_FORMAT, "step": step, "model": weights, "ema": weights,  # one storage, saved once
             "phema": {"sigma_rel": sigma_rel, "gamma": gamma, "fit_error": solution.fit_error,
                       "inputs": [s.path.name for s in inputs], "coefficients": solution.coefficients.tolist()}}
    recipe = run_dir / RESOLVED_RECIPE
    if recipe.exists():  # the checkpoint loads on its own when copied out of the run
        state["recipe"] = recipe.read_text(encoding="utf-8")
    path = save_checkpoint(state, Path(out) if out is not None else reconstruction_path(run_dir, sigma_rel, step))
    return Reconstruction(path, sigma_rel, gamma, step, inputs, solution)


def _combine(inputs: list[Snapshot], coefficients, step: int) -> dict[str, torch.Tensor]:
    """sum_i x_i theta_hat_i over the averaged parameters (in float64), buffers from a snapshot at ``step``."""
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    buffers: set[str] = set()
    for snap, x in zip(inputs, coefficients):
        tensors = load_snapshot_weights(snap.path)
        if total and tensors.keys() != total.keys():
            raise CheckpointError(f"{snap.path}: holds other tensors than {inputs[0].path.name}; are both of one run?")
        buffers = set(json.loads(_metadata(snap.path).get("buffers", "[]")))
        for name, value in tensors.items():
            if name in buffers or not value.is_floating_point():
                if snap.step == step or name not in total:
                    total[name] = value  # a buffer is taken, never averaged
                continue
            dtypes[name] = value.dtype
            total[name] = total.get(name, 0) + float(x) * value.double()
    return {k: v.to(dtypes[k]) if k in dtypes else v for k, v in total.items()}
