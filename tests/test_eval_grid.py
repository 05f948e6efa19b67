"""``gentool eval`` over a grid (EMA lengths x guidance x sampler x steps): resumable, a table, figures, the best
cell in RUN/eval/best.json for ``gentool sample --best``. A tiny 28x28 grey run, n = 10, 2 steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _tiny import UNET28
from gentool.cli import app
from gentool.evaluation import grid

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()

RECIPE = """
[run]
name = "grid28"
output_dir = "{out}"

[data]
name = "toy"
n = 20
image_size = 28
channels = 1

[schedule]
name = "linear"
timesteps = 20

[denoiser]
name = "unet"
""" + UNET28 + """
class_cond = false

[train]
steps = 4
batch_size = 4
checkpoint_every = 2
phema_sigma_rels = [0.05, 0.1]
phema_every = 2
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from gentool.api import run_recipe

    tmp = tmp_path_factory.mktemp("grid")
    recipe = tmp / "grid28.toml"
    recipe.write_text(RECIPE.format(out=(tmp / "runs").as_posix()), encoding="utf-8")
    result = run_recipe(recipe, device="cpu", run_tasks=False, progress=False, log=lambda m: None)
    assert result.run.step == 4
    return result.run.run_dir


def counting(fail_at: int | None = None):
    """``grid.sample_cell`` counting its calls; the ``fail_at``-th call is interrupted, as a killed grid stops."""
    real, calls = grid.sample_cell, []

    def cell(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == fail_at:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    return cell, calls


def test_a_killed_grid_resumes_without_recomputing_and_sample_best_uses_its_best_cell(trained, tmp_path, monkeypatch):
    run_dir = Path(shutil.copytree(trained, tmp_path / "grid28"))
    guide = run_dir / "checkpoints" / "step_00000002.pt"
    args = ["eval", run_dir, "--ema", "0.05,0.1", "--guide-with", guide, "--guidance", "0,1", "--n", 10, "--steps", 2,
            "--batch-size", 10, "--cache-dir", tmp_path / "cache"]
    cell, calls = counting(fail_at=2)
    monkeypatch.setattr(grid, "sample_cell", cell)
    assert invoke(*args).exit_code == 130  # as Ctrl-C stops it
    cells = run_dir / "eval" / "grid" / "cells"
    finished = sorted(cells.glob("*/cell.json"))
    assert len(calls) == 2 and len(finished) == 1  # the first cell finished, the second was killed
    first_samples = finished[0].parent / "samples.safetensors"
    stamp = first_samples.stat().st_mtime_ns

    cell, calls = counting()
    monkeypatch.setattr(grid, "sample_cell", cell)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert len(calls) == 3  # 2 EMA lengths x 2 weights = 4 cells; the finished one is not sampled again
    assert first_samples.stat().st_mtime_ns == stamp and len(list(cells.glob("*/cell.json"))) == 4
    folder = run_dir / "eval" / "grid"
    for name in ("grid.md", "grid.csv", "grid.json", "fid_vs_w.png", "isc_vs_w.png"):
        assert (folder / name).stat().st_size > 0, name
    report = json.loads((folder / "grid.json").read_text())
    assert report["feature_extractor"]["name"] == "gentool-cnn28"  # the default on 28x28 grey images
    assert {(c["cell"]["ema"], c["cell"]["kind"], c["cell"]["w"]) for c in report["cells"]} == {
        (0.05, "cfg", 0.0), (0.05, "auto", 1.0), (0.1, "cfg", 0.0), (0.1, "auto", 1.0)}
    assert all(set(c["metrics"]) == {"fid", "isc", "isc_std"} for c in report["cells"])
    fids = {c["name"]: c["metrics"]["fid"] for c in report["cells"]}
    best = json.loads((run_dir / "eval" / "best.json").read_text())
    assert best["metric"] == "fid" and best["value"] == min(fids.values()) and fids[best["name"]] == best["value"]
    assert (run_dir / best["weights"]).is_file() and best["weights"].startswith("checkpoints/phema-")
    assert "| EMA | guidance |" in result.stdout and "best by fid" in result.stdout

    cell, calls = counting()
    monkeypatch.setattr(grid, "sample_cell", cell)
    assert invoke(*args).exit_code == 0 and calls == []  # all done: nothing is sampled

    sampled = invoke("sample", run_dir, "--best", "--n", 2, "--grid-only", "--out", tmp_path / "best")
    assert sampled.exit_code == 0, sampled.output
    assert f"weights {run_dir / best['weights']}" in " ".join(sampled.output.split())
    assert f"steps = {best['steps']}" in sampled.output and f"guidance = {best['guidance']}" in sampled.output
    assert ("autoguided by" in sampled.output) == (best["guidance_kind"] == "auto")
    assert (tmp_path / "best" / "grid.png").is_file()


def test_a_changed_setting_is_a_new_cell_and_bad_axes_are_refused_before_any_work(trained, tmp_path, monkeypatch):
    run_dir = Path(shutil.copytree(trained, tmp_path / "grid28"))
    cell, calls = counting()
    monkeypatch.setattr(grid, "sample_cell", cell)
    common = ["eval", run_dir, "--n", 10, "--batch-size", 10, "--cache-dir", tmp_path / "cache"]
    assert invoke(*common, "--steps", "2,3").exit_code == 0 and len(calls) == 2
    assert (run_dir / "eval" / "grid" / "fid_vs_steps.png").is_file()
    assert invoke(*common, "--steps", "2,3", "--seed", 7).exit_code == 0 and len(calls) == 4  # another seed
    for bad, message in [(["--guidance", "1", "--grid"], "needs a class-conditional model"),
                         (["--guidance-kind", "auto"], "needs --guide-with"),
                         (["--interval", "3:1"], "LO:HI"),
                         (["--ema", "0.5"], "outside"),
                         (["--grid", "--metrics", "bpd"], "a grid scores samples")]:
        result = runner.invoke(app, [str(a) for a in [*common, *bad]])
        assert result.exit_code != 0 and message in result.output, (bad, result.output)
    assert len(calls) == 4
