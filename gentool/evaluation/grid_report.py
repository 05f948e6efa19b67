"""An evaluation grid's table (Markdown and CSV) and figures, each file written atomically.

* ``grid.md`` / ``grid.csv``: one row per cell, the best one marked;
* ``<metric>_vs_w.png`` (when the grid has several w): the metric against the
  guidance weight, one line per EMA length (and guidance kind), at the best
  cell's sampler, steps and interval;
* ``<metric>_vs_steps.png`` (when it has several step counts): the metric
  against the steps, one line per sampler, at the best cell's EMA and guidance.

Drawn with matplotlib's Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from gentool.atomic import atomic_write_bytes, atomic_write_text

PLOTTED = ("fid", "isc", "class_acc", "kid", "f_score")  # the main value of each metric


def _key(cell: dict[str, Any]) -> str:
    return json.dumps([cell["ema"], cell["kind"], cell["w"], cell["interval"], cell["sampler"], cell["steps"]])


def _normal(ema, kind, w, interval, sampler, steps) -> str:
    """The key of a cell as the grid stores it: unguided cells are one cell (kind cfg, no interval)."""
    if w == 0:
        kind, interval = "cfg", None
    return _key({"ema": ema, "kind": kind, "w": w, "interval": interval, "sampler": sampler, "steps": steps})


def guidance_text(cell: dict[str, Any]) -> str:
    if cell["w"] == 0:
        return "none"
    interval = f" in [{cell['interval'][0]:g}, {cell['interval'][1]:g}]" if cell["interval"] else ""
    return f"{cell['kind']} w={cell['w']:g}{interval}"


def rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows (values as text; the best cell's name starred)."""
    metrics = sorted({k for r in report["cells"] for k in r["metrics"]}, key=lambda k: (k.endswith("_std"), k))
    header = ["", "EMA", "guidance", "sampler", "steps", *metrics, "sampling s"]
    best = (report.get("best") or {}).get("name")
    out = []
    for r in report["cells"]:
        cell, steps = r["cell"], r["settings"]["steps"]
        out.append(["*" if r["name"] == best else "", "run" if cell["ema"] is None else f"{cell['ema']:g}",
                    guidance_text(cell), cell["sampler"], "default" if steps is None else str(steps),
                    *[f"{r['metrics'][m]:.4g}" if m in r["metrics"] else "" for m in metrics],
                    f"{r.get('sampling_s', 0):.1f}"])
    return header, out


def markdown(report: dict[str, Any]) -> str:
    header, body = rows(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    best = report.get("best")
    if best:
        lines += ["", f"best by {best['metric']} ({'lowest' if best['lower_is_better'] else 'highest'}): "
                      f"{best['name']} = {best['value']:.4g}"]
    return "\n".join(lines) + "\n"


def _csv(report: dict[str, Any]) -> str:
    header, body = rows(report)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["best", *header[1:]])
    writer.writerows(body)
    return buffer.getvalue()


def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="tight")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue())


def _value(index: dict[str, dict], key: str, metric: str) -> float | None:
    v = index.get(key, {}).get("metrics", {}).get(metric)
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _line(ax, xs, ys, label: str, style: str = "-") -> int:
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=label)
    return len(pts)


def figures(report: dict[str, Any], folder: Path) -> list[Path]:
    """``<metric>_vs_w.png`` and ``<metric>_vs_steps.png`` for the plotted metrics the grid measured."""
    cells = [r["cell"] for r in report["cells"]]
    index = {_key(json.loads(json.dumps(r["cell"]))): r for r in report["cells"]}
    best_record = next(r for r in report["cells"] if r["name"] == report["best"]["name"])
    best = best_record["cell"]
    best_steps = best["steps"] or best_record.get("settings", {}).get("steps") or "the recipe's"  # resolved count
    emas = list(dict.fromkeys(c["ema"] for c in cells))
    ws = sorted({c["w"] for c in cells})
    kinds = list(dict.fromkeys(c["kind"] for c in cells if c["w"] != 0)) or ["cfg"]
    guided_intervals = [c["interval"] for c in cells if c["w"] != 0]
    interval = best["interval"] if best["w"] != 0 else (guided_intervals[0] if guided_intervals else None)
    steps = list(dict.fromkeys(c["steps"] for c in cells if c["steps"] is not None))
    samplers = list(dict.fromkeys(c["sampler"] for c in cells))
    measured = {k for r in report["cells"] for k in r["metrics"]}
    written = []
    for metric in (m for m in PLOTTED if m in measured):
        if len(ws) > 1:
            at = ("" if len(kinds) > 1 else f"{kinds[0]}, ") + f"{best['sampler']}, {best_steps} steps"
            at += f", interval [{interval[0]:g}, {interval[1]:g}]" if interval else ""
            fig, ax = _figure(f"{metric} against the guidance weight ({at})", "guidance weight w", metric)
            drawn = 0
            for ema in emas:
                for kind, style in zip(kinds, ("-", "--", ":")):
                    keys = [_normal(ema, kind, w, interval, best["sampler"], best["steps"]) for w in ws]
                    label = f"EMA {'run' if ema is None else f'{ema:g}'}" + (f", {kind}" if len(kinds) > 1 else "")
                    drawn += _line(ax, ws, [_value(index, k, metric) for k in keys], label, style)
            if drawn:
                ax.legend(fontsize=8)
                written.append(_save(fig, folder / f"{metric}_vs_w.png"))
        if len(steps) > 1:
            fig, ax = _figure(f"{metric} against the steps (EMA {best['ema'] if best['ema'] is not None else 'run'}, "
                              f"guidance {guidance_text(best)})", "steps", metric)
            at = (best["ema"], best["kind"], best["w"], best["interval"])
            drawn = sum(_line(ax, steps, [_value(index, _normal(*at, s, n), metric) for n in steps], s)
                        for s in samplers)
            if drawn:
                ax.legend(fontsize=8)
                written.append(_save(fig, folder / f"{metric}_vs_steps.png"))
    return written


def write(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """The table (``grid.md``, ``grid.csv``) and the figures in ``folder``."""
    folder = Path(folder)
    files = [atomic_write_text(folder / "grid.md", markdown(report)),
             atomic_write_text(folder / "grid.csv", _csv(report))]
    return files + figures(report, folder)
