"""The distillation measurements in the docs are the reports' numbers, and the figure's script reads them.

docs/distillation.md's summary table (FID at 1 / 2 / 4 steps, sampling seed 0,
first distillation) must say what the `gentool eval` reports in
benchmarks/results/quality-cpu-2026-12-07/distill/ say; the figure's script
counts a guided step as two network evaluations.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality-cpu-2026-12-07" / "distill"


def _plot_module():
    spec = importlib.util.spec_from_file_location("plot_distillation", ROOT / "benchmarks" / "plot_distillation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _student_fids(prefix: str) -> list[float]:
    """FID at 1, 2, 4 steps, sampling seed 0, from the reports named ``prefix``."""
    plot = _plot_module()
    by_steps = {}
    for path in sorted(RESULTS.glob(f"{prefix}*_seed0.json")):
        report = json.loads(path.read_text())
        cells = report["cells"] if "cells" in report else [
            {"cell": {"steps": report["sampler"]["steps"]}, "metrics": report["metrics"]}]
        for cell in cells:
            by_steps[cell["cell"]["steps"]] = cell["metrics"]["fid"]
        assert plot.points(path)
    return [by_steps[k] for k in (1, 2, 4)]


def _table_rows() -> dict[str, list[float]]:
    text = (ROOT / "docs" / "distillation.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\| `(progressive|consistency|ect|reflow)` [^|]*\| ([\d.]+) / ([\d.]+) / ([\d.]+) \|", line)
        if m:
            rows[m.group(1)] = [float(m.group(i)) for i in (2, 3, 4)]
    return rows


@pytest.mark.parametrize("method,prefix", [("progressive", "progressive_steps"), ("consistency", "consistency_steps"),
                                           ("ect", "ect_steps"), ("reflow", "reflow_steps")])
def test_the_summary_table_is_the_reports(method, prefix):
    stated = _table_rows()[method]
    measured = _student_fids(prefix)
    assert stated == [round(f, 2) for f in measured], (method, stated, measured)


def test_a_guided_step_counts_two_evaluations(tmp_path):
    plot = _plot_module()
    grid = {"cells": [
        {"cell": {"kind": "cfg", "w": 2.0, "sampler": "euler", "steps": 4}, "metrics": {"fid": 3.0, "class_acc": 0.9}},
        {"cell": {"kind": "cfg", "w": 0.0, "sampler": "euler", "steps": 4}, "metrics": {"fid": 5.0, "class_acc": 0.8}},
    ]}
    single = {"sampler": {"name": "ddim", "steps": 2, "guidance": None}, "metrics": {"fid": 7.0, "class_acc": 0.7}}
    (tmp_path / "a_seed0.json").write_text(json.dumps(grid))
    (tmp_path / "b_seed0.json").write_text(json.dumps(single))
    assert plot.points(tmp_path / "a_seed0.json") == [("euler", 8, 3.0, 0.9), ("euler", 4, 5.0, 0.8)]
    assert plot.points(tmp_path / "b_seed0.json") == [("ddim", 2, 7.0, 0.7)]
    series = plot.series(tmp_path, "a")
    assert dict(series["euler"]) == {8: [3.0], 4: [5.0]}


def test_the_figure_is_drawn_from_the_reports(tmp_path):
    plot = _plot_module()
    out = tmp_path / "fig.png"
    import sys
    argv, sys.argv = sys.argv, ["plot_distillation.py", "--results", str(RESULTS), "--out", str(out)]
    try:
        plot.main()
    finally:
        sys.argv = argv
    assert out.stat().st_size > 10_000


def test_image_rows_stacks_labelled_grids(tmp_path, monkeypatch):
    from PIL import Image
    spec = importlib.util.spec_from_file_location("image_rows", ROOT / "benchmarks" / "image_rows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, size in (("a", (60, 12)), ("b", (60, 24))):
        Image.new("RGB", size, (255, 255, 255)).save(tmp_path / f"{name}.png")
    out = tmp_path / "rows.png"
    monkeypatch.setattr("sys.argv", ["image_rows.py", "--out", str(out), f"first={tmp_path / 'a.png'}",
                                     f"second={tmp_path / 'b.png'}"])
    module.main()
    two = Image.open(out).size
    one_out = tmp_path / "one.png"
    monkeypatch.setattr("sys.argv", ["image_rows.py", "--out", str(one_out), f"first={tmp_path / 'a.png'}"])
    module.main()
    one = Image.open(one_out).size
    assert two[1] > 2 * one[1] * 0.8                  # the rows stand one under the other (the second twice as tall)
    monkeypatch.setattr("sys.argv", ["image_rows.py", "--out", str(out), str(tmp_path / "a.png")])
    with pytest.raises(SystemExit):                 # a row without LABEL= is refused
        module.main()
