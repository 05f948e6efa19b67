"""Plots of a run's ``metrics.jsonl``: the loss curve, the test loss per timestep, evaluations.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
change) and written atomically into ``plots/`` of the run directory.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from gentool.engine.metrics import METRICS, read_metrics

PLOTS = "plots"
TEST_PREFIX, EVAL_PREFIX = "test_loss/t=", "eval/"


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    pts = [(s, float(v)) for s, v in pts if math.isfinite(v)]
    return [s for s, _ in pts], [v for _, v in pts]


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return path


def _figure(title: str, ylabel: str, log_y: bool):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="tight")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    return fig, ax


def _plot_keys(records, keys, labels, title, ylabel, path, log_y) -> Path | None:
    fig, ax = _figure(title, ylabel, log_y)
    drawn = 0
    for key, label in zip(keys, labels):
        x, y = _series(records, key)
        if x and (not log_y or min(y) > 0):
            ax.plot(x, y, marker="." if len(x) < 30 else None, label=label)
            drawn += 1
    if not drawn:
        return None
    if len(keys) > 1:
        ax.legend()
    return _save(fig, path)


def plot_metrics(run_dir: Path) -> list[Path]:
    """Write ``plots/loss.png``, ``plots/test_loss.png`` and ``plots/eval.png`` (those with data)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / METRICS)
    out_dir = run_dir / PLOTS
    keys = sorted({k for r in records for k in r})
    test_keys = sorted((k for k in keys if k.startswith(TEST_PREFIX) and k[len(TEST_PREFIX):].isdecimal()),
                       key=lambda k: int(k[len(TEST_PREFIX):]))
    eval_keys = [k for k in keys if k.startswith(EVAL_PREFIX)]
    written = [
        _plot_keys(records, ["loss"], ["train loss"], "training loss (L_simple)", "loss", out_dir / "loss.png", True),
        _plot_keys(records, test_keys, [f"t = {k[len(TEST_PREFIX):]}" for k in test_keys],
                   "test-split loss at fixed timesteps", "loss", out_dir / "test_loss.png", True),
        _plot_keys(records, eval_keys, [k[len(EVAL_PREFIX):] for k in eval_keys], "evaluation",
                   "value", out_dir / "eval.png", False),
    ]
    return [p for p in written if p is not None]
