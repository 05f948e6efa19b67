"""``gentool compare``: several runs' metrics overlaid in one figure, named by what differs between them.

Each run directory contributes its ``metrics.jsonl`` (the training loss, the
test losses at fixed timesteps, the evaluation metrics) and its
``recipe.resolved.toml``. The resolved recipes are flattened to dotted keys
(``schedule.name``, ``train.lr``); a run's label is the keys whose values
differ between the runs (``schedule.name=cosine``), leaving out the run's own
name and folder and, where a component's ``name`` differs, that component's
other options (a cosine schedule's ``s`` is implied by ``schedule.name``).

Runs of one sweep (folders of a folder holding ``sweep.json``) are drawn in
the sweep's variant order, whatever order the shell's ``*`` gave them, so
each keeps the colour it has in the sweep's own figure.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gentool.atomic import atomic_write
from gentool.engine.metrics import METRICS, read_metrics
from gentool.errors import GentoolError

RESOLVED_RECIPE = "recipe.resolved.toml"
SWEEP_FILE = "sweep.json"  # written by gentool.sweep into the folder of its variants' run directories
#: keys that differ between any two runs without saying anything about them
IGNORED = ("run.name", "run.output_dir")
TEST_PREFIX, EVAL_PREFIX = "test_loss/t=", "eval/"
MAX_LABEL_KEYS = 3


class CompareError(GentoolError, ValueError):
    """Runs that cannot be compared (not run directories, no metrics)."""


@dataclass
class RunSummary:
    """One run of a comparison: where, its label, what differs, its last values."""

    run_dir: Path
    label: str
    differences: dict[str, Any]
    final: dict[str, float] = field(default_factory=dict)  # metric -> last finite value
    last_step: int = 0
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"run": str(self.run_dir), "label": self.label, "differences": self.differences,
                "step": self.last_step, "final": self.final}


@dataclass
class Comparison:
    runs: list[RunSummary]
    metrics: list[str]  # the metric keys in figure order: loss, test losses by t, evaluation metrics
    figures: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "figures": [str(p) for p in self.figures],
                "runs": [r.to_json() for r in self.runs]}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"schedule": {"name": "cosine"}} -> {"schedule.name": "cosine"}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(recipes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe (flattened), the keys whose values are not the same in all of them (absent: ``None``)."""
    keys = sorted({k for r in recipes for k in r if k not in IGNORED})
    differ = [k for k in keys if len({json.dumps(r.get(k), sort_keys=True, default=str) for r in recipes}) > 1]
    renamed = {k.rsplit(".", 1)[0] for k in differ if k.endswith(".name")}
    differ = [k for k in differ if k.endswith(".name") or k.rsplit(".", 1)[0] not in renamed]
    return [{k: r.get(k) for k in differ} for r in recipes]


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def label_of(diff: dict[str, Any], fallback: str) -> str:
    """``schedule.name=cosine, train.lr=0.0002`` (at most three keys), or ``fallback`` when nothing differs."""
    parts = [f"{k}={_format(v)}" for k, v in diff.items()]
    if not parts:
        return fallback
    return ", ".join(parts[:MAX_LABEL_KEYS]) + (f", +{len(parts) - MAX_LABEL_KEYS} more" if len(parts) > MAX_LABEL_KEYS
                                                else "")


def _read_recipe(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RESOLVED_RECIPE
    if not path.exists():
        return {}
    try:
        return flatten(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError:
        return {}


def _final(records: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for record in records:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                out[key] = float(value)
    return out


def metric_keys(runs: list[RunSummary]) -> list[str]:
    """The plotted metrics: the training loss, the test losses in order of t, the evaluation metrics."""
    keys = {k for r in runs for rec in r.records for k in rec}
    tests = sorted((k for k in keys if k.startswith(TEST_PREFIX) and k[len(TEST_PREFIX):].isdecimal()),
                   key=lambda k: int(k[len(TEST_PREFIX):]))
    evals = sorted(k for k in keys if k.startswith(EVAL_PREFIX))
    return (["loss"] if "loss" in keys else []) + tests + evals


def in_sweep_order(dirs: list[Path]) -> list[Path]:
    """``dirs`` in their sweep's variant order when they share a folder with a ``sweep.json`` (the others
    after them), else as given."""
    parents = {d.resolve().parent for d in dirs}
    if len(parents) != 1:
        return dirs
    try:
        state = json.loads((parents.pop() / SWEEP_FILE).read_text(encoding="utf-8"))
        order = {v["name"]: i for i, v in enumerate(state["variants"])}
    except (OSError, ValueError, KeyError, TypeError):
        return dirs
    return sorted(dirs, key=lambda d: order.get(d.resolve().name, len(order)))  # stable: the rest keep theirs


def load_runs(run_dirs: list[str | Path]) -> list[RunSummary]:
    """Read each run directory's metrics and recipe; label each run by what differs."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise CompareError("name at least one run directory to compare")
    for d in dirs:
        if not d.is_dir():
            raise CompareError(f"{d}: not a run directory (no such folder)")
        if not (d / METRICS).exists() and not (d / RESOLVED_RECIPE).exists():
            raise CompareError(f"{d}: not a gentool run directory (no {METRICS} or {RESOLVED_RECIPE})")
    dirs = in_sweep_order(dirs)
    diffs = differences([_read_recipe(d) for d in dirs])
    names = [d.name for d in dirs]
    if len(set(names)) < len(names):  # runs/a/x and runs/b/x
        names = [f"{d.parent.name}/{d.name}" for d in dirs]
    out = []
    for d, diff, name in zip(dirs, diffs, names):
        records = read_metrics(d / METRICS)
        out.append(RunSummary(d, label_of(diff, name), diff, _final(records),
                              max((int(r["step"]) for r in records), default=0), records))
    labels = [r.label for r in out]
    for r, name in zip(out, names):  # two runs alike in every recipe key (another seed is a difference)
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({name})" if r.differences else name
    return out


def _title(key: str) -> tuple[str, bool]:
    """A panel's title and whether its y axis is logarithmic."""
    if key == "loss":
        return "training loss", True
    if key.startswith(TEST_PREFIX):
        return f"test loss at t = {key[len(TEST_PREFIX):]}", True
    return key[len(EVAL_PREFIX):] if key.startswith(EVAL_PREFIX) else key, False


def _panel(ax, key: str, runs: list[RunSummary], colours: list[str]) -> None:
    """One metric against step, a line per run."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    title, log_y = _title(key)
    for run, colour in zip(runs, colours):
        pts = [(r["step"], float(r[key])) for r in run.records if isinstance(r.get(key), (int, float))]
        pts = [(s, v) for s, v in pts if math.isfinite(v) and (v > 0 or not log_y)]
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], color=colour, label=run.label,
                    marker="." if len(pts) < 30 else None)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if log_y and ax.has_data():
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.4g"))  # not 1.02x10^0 on a narrow range
        lo, hi = ax.get_ylim()  # label the minor ticks only where no decade tick shows
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g") if hi / lo < 10 else NullFormatter())
    ax.grid(True, alpha=0.3)


def plot(runs: list[RunSummary], metrics: list[str], out: Path, *, svg: bool = False) -> list[Path]:
    """One panel per metric, one line per run (same colour in every panel), one legend; PNG (and SVG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not metrics:
        raise CompareError("none of the runs has logged metrics yet (metrics.jsonl is empty or missing)")
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    longest = max(len(r.label) for r in runs)
    ncol = max(1, min(len(runs), int(4.2 * cols * 9) // (longest + 6)))  # ~9 legend characters per inch
    legend_h = 0.3 * math.ceil(len(runs) / ncol) + 0.15  # inches below the panels
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + legend_h))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, key in zip(axes, metrics):
        _panel(ax, key, runs, colours)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    lines = {line.get_label(): line for ax in axes for line in ax.get_lines()}
    shown = [r.label for r in runs if r.label in lines]
    fig.legend([lines[label] for label in shown], shown, loc="lower center", ncol=ncol, frameon=False)
    fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for path in [out] + ([out.with_suffix(".svg")] if svg else []):
        written.append(atomic_write(path, lambda f: fig.savefig(f, dpi=110, format=path.suffix[1:])))
    return written


def default_output(run_dirs: list[Path]) -> Path:
    """``<common parent>/compare.png`` when the runs share a parent folder, else ``compare.png``; relative
    to the current folder when the runs were named so (as every command prints its paths)."""
    parents = {Path(d).parent for d in run_dirs}
    if len(parents) == 1:
        return parents.pop() / "compare.png"
    resolved = {Path(d).resolve().parent for d in run_dirs}  # runs/a and ./runs/b
    if len(resolved) == 1:
        parent = resolved.pop()
        return (parent.relative_to(Path.cwd()) if parent.is_relative_to(Path.cwd()) else parent) / "compare.png"
    return Path("compare.png")


def compare(run_dirs: list[str | Path], out: str | Path | None = None, *, svg: bool = False,
            figure: bool = True) -> Comparison:
    """Compare runs: their labels and final values, and the figure at ``out`` (PNG; SVG beside it)."""
    runs = load_runs(run_dirs)
    result = Comparison(runs, metric_keys(runs))
    if figure:
        path = Path(out) if out is not None else default_output([r.run_dir for r in runs])
        if path.suffix.lower() not in (".png", ".svg"):
            path = path.with_suffix(".png")
        result.figures = plot(runs, result.metrics, path.with_suffix(".png"), svg=svg or path.suffix == ".svg")
    return result
