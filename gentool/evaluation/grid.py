"""``gentool eval`` over a grid: EMA lengths x guidance (kind, w, interval) x sampler x steps from one run.

Each cell samples ``n`` images with one setting (the same seed, so the same
start noise, in every cell) and scores them with the sample metrics (FID, IS,
class accuracy, ...). The EMA lengths are post-hoc EMA reconstructions
(:func:`gentool.engine.phema_files.reconstruct`, written once into the run's
``checkpoints/`` and reused); ``None`` is the checkpoint's own EMA.

The grid is resumable: each cell lives in ``<folder>/cells/<name>/``, its
samples as ``samples.safetensors`` (uint8, as a PNG file would hold them)
and its scores as ``cell.json``, each written atomically when done. A cell
whose ``cell.json`` exists for the same metrics is not recomputed; one whose
samples exist is only scored again. The folder name holds a hash of what
the samples depend on (weights, guidance, sampler and its options, steps, n,
seed, batch size), so a changed setting is a new cell, never a stale one.

After the last cell: the table and figures (:mod:`gentool.evaluation.grid_report`)
and the best cell, written where ``gentool sample RUN --best`` reads it
(:mod:`gentool.evaluation.best`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from gentool.atomic import atomic_write_bytes, atomic_write_text
from gentool.autoguidance import guide_run
from gentool.engine import phema_files
from gentool.engine.checkpoint import restore_latest
from gentool.engine.phema import gamma_of
from gentool.errors import UsageError
from gentool.evaluation import best as best_cell
from gentool.evaluation import grid_report
from gentool.evaluation.evaluate import (CLASS_METRICS, MIN_SAMPLES, checked_extractor, class_cycle, progress_bar,
                                         scores, versions, weights_used)
from gentool.evaluation.features import concat, extract
from gentool.evaluation.fidelity import REFERENCE_METRICS, SAMPLE_METRICS
from gentool.evaluation.reference import reference_features
from gentool.service import SamplingOptions, plan

CELLS, SAMPLES, CELL = "cells", "samples.safetensors", "cell.json"


@dataclass(frozen=True)
class Cell:
    """One setting of the grid; :meth:`normal` makes every unguided (w = 0) cell the same one."""

    ema: float | None  # post-hoc EMA sigma_rel; None: the checkpoint's own EMA weights
    kind: str  # "cfg" or "auto"
    w: float
    interval: tuple[float, float] | None  # Karras sigma range where guidance applies; None: everywhere
    sampler: str
    steps: int | None  # None: the recipe's (else the process's default)

    def normal(self) -> "Cell":
        return replace(self, kind="cfg", interval=None) if self.w == 0 else self

    def name(self) -> str:
        ema = "run" if self.ema is None else f"{self.ema:g}"
        interval = "" if self.interval is None else f"_{self.interval[0]:g}-{self.interval[1]:g}"
        return f"ema{ema}_{self.kind}{self.w:g}{interval}_{self.sampler}_{self.steps or 'default'}"

    def options(self, guide: Any) -> SamplingOptions:
        return SamplingOptions(sampler=self.sampler, steps=self.steps, guidance=self.w, guidance_interval=self.interval,
                               guidance_kind=self.kind, guide_with=guide if self.kind == "auto" else None)


@dataclass
class Axes:
    """The grid's axes; every combination is a cell (unguided ones merged)."""

    ema: Sequence[float | None] = (None,)
    kinds: Sequence[str] = ("cfg",)
    w: Sequence[float] = (0.0,)
    intervals: Sequence[tuple[float, float] | None] = (None,)
    samplers: Sequence[str] = ("",)
    steps: Sequence[int | None] = (None,)

    def cells(self) -> list[Cell]:
        product = itertools.product(self.ema, self.kinds, self.w, self.intervals, self.samplers, self.steps)
        return list(dict.fromkeys(Cell(*values).normal() for values in product))


def sample_cell(run, options: SamplingOptions, *, n: int, batch_size: int, seed: int, bar=None) -> torch.Tensor:
    """``n`` images of one cell as uint8 ``[n, C, H, W]`` (quantised as a PNG file would be), classes in turn."""
    generator = run.generator(seed)
    parts = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = run.sample(b, options=replace(options, labels=class_cycle(run, start, b)), generator=generator,
                       progress=False)
        parts.append(((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu())
        if bar is not None:
            bar.advance(bar.task_ids[-1], b)
    return torch.cat(parts)


def features_of(fx, images: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Features of uint8 ``[n, C, H, W]`` images (grey repeated to RGB), in batches."""
    device = next(iter(fx.parameters()), torch.empty(0)).device
    parts = []
    for batch in images.split(batch_size):
        rgb = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
        parts.append(extract(fx, rgb.contiguous().to(device)))
    return concat(parts)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _relative(path: Path | None, run_dir: Path) -> str | None:
    """``path`` relative to the run directory when inside it (run directories move), else absolute."""
    if path is None:
        return None
    path = Path(path).resolve()
    try:
        return path.relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        return str(path)


def _save_samples(images: torch.Tensor, path: Path, settings: dict[str, Any]) -> None:
    from safetensors.torch import save  # loads only when a grid runs

    atomic_write_bytes(path, save({"images": images.contiguous()}, metadata={"settings": json.dumps(settings)}))


def _load_samples(path: Path, settings: dict[str, Any]) -> torch.Tensor | None:
    """The cached samples if the file is whole and made with ``settings``; else None (made again)."""
    from safetensors import safe_open  # loads only when a grid runs

    try:
        with safe_open(str(path), framework="pt") as f:
            if json.loads((f.metadata() or {}).get("settings", "null")) != json.loads(json.dumps(settings)):
                return None
            return f.get_tensor("images")
    except Exception:  # noqa: BLE001 - missing, truncated: sample again
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """The grid's metrics: sample metrics and class accuracy (loss_t and bpd do not depend on the sampler)."""
    bad = [m for m in metrics if m not in SAMPLE_METRICS and m not in CLASS_METRICS]
    if bad:
        raise UsageError(f"--metrics {','.join(bad)}: a grid scores samples; choose from "
                         f"{', '.join((*SAMPLE_METRICS, *CLASS_METRICS))}")
    return list(dict.fromkeys(metrics))


class Weights:
    """Puts each EMA length's weights into the run: a reconstruction (made once) or the checkpoint's own."""

    def __init__(self, run) -> None:
        self.run, self.files = run, phema_files
        self.original, self.current = run.checkpoint, run.checkpoint
        self._snapshots = None

    def step(self) -> int:
        if self._snapshots is None:
            self._snapshots = self.files.list_snapshots(self.run.run_dir)
        step, _ = self.files.choose_inputs(self._snapshots, None, None, self.files.snapshot_dir(self.run.run_dir))
        return step

    def path(self, ema: float | None) -> Path | None:
        """Where the weights of ``ema`` are (or will be): a reconstruction path, or the checkpoint loaded."""
        if ema is None:
            return self.original
        return self.files.reconstruction_path(self.run.run_dir, ema, self.step())

    def load(self, ema: float | None, log: Callable[[str], None]) -> None:
        path = self.path(ema)
        if path is not None and not path.is_file() and ema is not None:
            result = self.files.reconstruct(self.run.run_dir, ema, step=self.step())
            log(f"post-hoc EMA sigma_rel {ema:g}: wrote {result.path} (profile fit error "
                f"{result.solution.fit_error:.3g})")
        if path is not None and path != self.current:
            restore_latest(self.run, path)
            self.current = path

    def restore(self) -> None:
        if self.original is not None and self.current != self.original:
            restore_latest(self.run, self.original)
            self.current = self.original


def _prepare(run, config, axes: Axes, n: int, guide_with: Any) -> tuple[list[Cell], dict[Cell, Any], Any, Weights]:
    """The cells with their resolved sampling plans, the guiding run and the weights: every refusal before any work."""
    if n < MIN_SAMPLES:
        raise UsageError(f"--n must be at least {MIN_SAMPLES} for a grid's metrics, got {n}")
    guide = guide_run(run, guide_with) if guide_with is not None else None
    cells = axes.cells()
    plans = {cell: plan(run, cell.options(guide)) for cell in cells}
    weights = Weights(run)
    for ema in dict.fromkeys(c.ema for c in cells):
        if ema is not None:
            try:
                gamma_of(ema)
            except ValueError as exc:
                raise UsageError(f"--ema: {exc}") from None
            weights.path(ema)  # a run without snapshots is refused here
    return cells, plans, guide, weights


class _Scores:
    """The metrics of a cell's images; the reference features are computed (or read from the cache) once."""

    def __init__(self, run, fx, config, wanted: list[str], cache_dir, report: dict[str, Any]) -> None:
        self.run, self.fx, self.config, self.wanted, self.cache_dir, self.report = (run, fx, config, wanted,
                                                                                      cache_dir, report)
        self.reference = None

    def __call__(self, images: torch.Tensor, bar) -> dict[str, float]:
        config = self.config
        if self.reference is None and any(m in REFERENCE_METRICS for m in self.wanted):
            self.reference, self.report["reference"] = reference_features(
                self.run, self.fx, split=config.split, reference_n=config.reference_n,
                weights=weights_used(self.fx, config), batch_size=config.batch_size, cache_dir=self.cache_dir, bar=bar)
        feats = features_of(self.fx, images, config.batch_size)
        return scores(self.wanted, self.fx, feats, self.reference, class_cycle(self.run, 0, images.shape[0]))


def _cell(run, cell: Cell, *, folder: Path, guide, weights: Weights, settings: dict[str, Any],
          metric_key: dict[str, Any], score: _Scores, bar, log: Callable[[str], None], where: str) -> dict[str, Any]:
    """One cell: its record from ``cell.json`` when done for these metrics, else sampled (or its cached samples
    read) and scored, the samples and then the record written atomically."""
    cell_dir = folder / CELLS / f"{cell.name()}_{_digest(settings)}"
    done = _read_json(cell_dir / CELL)
    if done is not None and done.get("settings") == json.loads(json.dumps(settings)) \
            and done.get("metric_key") == metric_key:
        log(f"cell {where} {cell.name()}: done before")
        return done
    t0 = time.perf_counter()
    images = _load_samples(cell_dir / SAMPLES, settings)
    if images is None:
        weights.load(cell.ema, log)
        bar.add_task(f"cell {where}: {settings['n']} images", total=settings["n"])
        images = sample_cell(run, cell.options(guide), n=settings["n"], batch_size=settings["batch_size"],
                             seed=settings["seed"], bar=bar)
        _save_samples(images, cell_dir / SAMPLES, settings)
    seconds = time.perf_counter() - t0
    values = score(images, bar)
    record = {"cell": asdict(cell), "name": cell_dir.name, "settings": settings, "metric_key": metric_key,
              "metrics": values, "sampling_s": round(seconds, 3)}
    atomic_write_text(cell_dir / CELL, json.dumps(record, indent=2) + "\n")
    log(f"cell {where} {cell.name()}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    return record


def run_grid(run, config, axes: Axes, *, n: int, folder: str | Path, seed: int | None = None,
             guide_with: Any = None, cache_dir: str | Path | None = None, best_by: str | None = None,
             best_file: str | Path | None = None, progress: bool = True, log: Callable[[str], None] = print,
             warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate every cell of ``axes`` on ``run`` (resuming), then write the table, figures and best cell.

    ``config`` is an :class:`gentool.config.EvalConfig` (metrics, feature
    extractor, split, batch size; its sampler and steps fill empty axes);
    ``guide_with`` the weaker model of the ``"auto"`` cells (a path or a loaded
    run); ``best_file`` where the best cell goes (default:
    ``<folder>/best.json``). Returns the grid report (also ``<folder>/grid.json``).
    """
    folder = Path(folder)
    seed = run.recipe.run.seed if seed is None else int(seed)
    wanted = check_metrics(config.metrics)
    axes = replace(axes, samplers=[s or config.sampler or run.recipe.sampler.name for s in axes.samplers],
                   steps=[s if s is not None else (config.steps or None) for s in axes.steps])
    cells, plans, guide, weights = _prepare(run, config, axes, n, guide_with)
    guide_file = _relative(guide.checkpoint, run.run_dir) if guide is not None else None
    report: dict[str, Any] = {"run_dir": str(run.run_dir), "step": run.step, "n": n, "seed": seed,
                              "guide_with": guide_file}
    fx = checked_extractor(run, config, wanted, report, warn)  # before any sampling
    metric_key = {"metrics": wanted, "feature_extractor": config.feature_extractor,
                  "weights": weights_used(fx, config), "split": config.split, "reference_n": config.reference_n}
    score, results = _Scores(run, fx, config, wanted, cache_dir, report), []
    with progress_bar(progress) as bar:
        for i, cell in enumerate(cells, 1):
            p = plans[cell]
            settings = {"weights": _relative(weights.path(cell.ema), run.run_dir), "kind": cell.kind, "w": cell.w,
                        "interval": cell.interval, "sampler": p.name, "sampler_options": dict(p.sampler.keywords),
                        "steps": p.steps, "n": n, "seed": seed, "batch_size": config.batch_size,
                        "guide_with": guide_file if cell.kind == "auto" else None}
            results.append(_cell(run, cell, folder=folder, guide=guide, weights=weights, settings=settings,
                                 metric_key=metric_key, score=score, bar=bar, log=log, where=f"{i}/{len(cells)}"))
    weights.restore()
    report.update(cells=results, versions=versions())
    report["best"] = best_cell.choose(results, best_by or best_cell.default_metric(wanted))
    report["files"] = [str(f) for f in grid_report.write(report, folder)]
    best_path = best_cell.write(report["best"], report, Path(best_file) if best_file else folder / "best.json")
    report["files"] += [str(best_path), str(folder / "grid.json")]
    atomic_write_text(folder / "grid.json", json.dumps(report, indent=2) + "\n")
    return report
