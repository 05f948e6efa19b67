"""The best cell of an evaluation grid: chosen, written into the run, read back by ``gentool sample --best``.

``RUN/eval/best.json`` holds the cell's settings: the weights file (the
post-hoc EMA reconstruction, or the checkpoint the grid used; relative to the
run directory), sampler, steps, guidance kind, w and interval, the guiding
model of autoguidance, and the metric it was chosen by. ``gentool sample RUN
--best`` loads those weights and samples with those settings; an option given
on its command line wins over the file's.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

from gentool.atomic import atomic_write_text
from gentool.engine.checkpoint import run_dir_of
from gentool.errors import UsageError

BEST = "best.json"  # in RUN/eval/
LOWER_IS_BETTER = ("fid", "kid")
MAIN_KEY = {"fid": "fid", "isc": "isc", "kid": "kid", "prc": "f_score", "class_acc": "class_acc"}


def default_metric(wanted: list[str]) -> str:
    """FID when measured, else the first metric's main value."""
    return "fid" if "fid" in wanted else MAIN_KEY.get(wanted[0], wanted[0])


def choose(results: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The cell with the best finite ``metric`` (lowest FID or KID, highest of the others)."""
    measured = sorted({k for r in results for k in r["metrics"]})
    if metric not in measured:
        raise UsageError(f"--best-by {metric}: not measured by this grid; measured: {', '.join(measured)}")
    scored = [r for r in results if isinstance(r["metrics"].get(metric), (int, float))
              and math.isfinite(r["metrics"][metric])]
    if not scored:
        raise UsageError(f"--best-by {metric}: no cell has a finite value")
    sign = 1 if metric in LOWER_IS_BETTER else -1
    best = min(scored, key=lambda r: sign * r["metrics"][metric])
    return {"metric": metric, "value": best["metrics"][metric], "lower_is_better": sign == 1, "name": best["name"]}


def write(best: dict[str, Any], report: dict[str, Any], path: Path) -> Path:
    """``best.json``: the chosen cell's settings, metrics and where its grid is, atomically."""
    record = next(r for r in report["cells"] if r["name"] == best["name"])
    cell, settings = record["cell"], record["settings"]
    data = {**best, "ema": cell["ema"], "weights": settings["weights"], "sampler": settings["sampler"],
            "sampler_options": settings["sampler_options"], "steps": settings["steps"],
            "guidance_kind": cell["kind"], "guidance": cell["w"], "guidance_interval": cell["interval"],
            "guide_with": settings["guide_with"], "metrics": record["metrics"], "n": report["n"],
            "seed": report["seed"], "run_step": report["step"],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def best_file(run_dir: Path) -> Path:
    return Path(run_dir) / "eval" / BEST


def _in_run(value: str | None, run_dir: Path) -> Path | None:
    return None if value is None else (Path(value) if Path(value).is_absolute() else run_dir / value)


def best_settings(source: str | Path, *, sampler: str | None = None, steps: int | None = None,
                  guidance: float | None = None, guide_with: Any = None) -> tuple[Path, dict[str, Any]]:
    """The weights file and sampling settings of the run's best cell; the given (non-None) values win.

    Returns ``(weights, {"sampler", "steps", "guidance", "guide_with", "guidance_interval"})``.
    """
    source = Path(source)
    run_dir = source if source.is_dir() else run_dir_of(source)
    path = best_file(run_dir)
    if not path.is_file():
        raise UsageError(f"{path}: not found; gentool eval {run_dir} over a grid writes it (e.g. --ema 0.05,0.1 "
                         "--guidance 0,1,2)")
    try:
        best = json.loads(path.read_text(encoding="utf-8"))
        weights = _in_run(best["weights"], run_dir)
        chosen = {"sampler": sampler or best["sampler"], "steps": steps if steps is not None else best["steps"],
                  "guidance": guidance if guidance is not None else best["guidance"],
                  "guide_with": guide_with if guide_with is not None else _in_run(best["guide_with"], run_dir),
                  "guidance_interval": tuple(best["guidance_interval"]) if best["guidance_interval"] else None}
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a best-cell file written by gentool eval ({type(exc).__name__}: {exc})") \
            from None
    if weights is None or not weights.is_file():
        raise UsageError(f"{path}: its weights file {weights} no longer exists; run the grid again")
    return weights, chosen
