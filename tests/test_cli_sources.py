"""Where the commands that read a trained run write by default (gentool.cli.sources.default_out).

A run directory (or a checkpoint in one): into the run directory. Any other
file - weights from ``gentool export``, a checkpoint copied out of its run -
into ``./generated/<file stem>/``, never beside the file.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gentool.cli import app
from gentool.cli.sources import default_out
from gentool.engine.export import export_weights

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def read_only(tmp_path):
    """``make(folder)`` takes write permission away (root writes anyway: the tests also compare listings)."""
    folders = []

    def make(folder: Path) -> Path:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        folders.append(folder)
        return folder

    yield make
    for folder in folders:
        folder.chmod(stat.S_IRWXU)


@pytest.fixture
def weights(trained_toy, tmp_path, read_only) -> Path:
    """``trained_toy`` exported to ``tmp_path/cache/model.safetensors``, in a read-only folder."""
    path = export_weights(trained_toy.checkpoint, tmp_path / "cache" / "model.safetensors")
    read_only(path.parent)
    return path


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_sample_of_a_weights_file_writes_under_the_current_directory(weights, cwd):
    result = invoke("sample", weights, "--n", 2, "--steps", 2, "--grid-only", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert listing(weights.parent) == ["model.safetensors"]  # nothing beside the file
    grids = list(cwd.glob("generated/model/*/grid.png"))
    assert [g.parent.name for g in grids] == ["ancestral_2steps_w0_seed3"]
    assert f"wrote {Path('generated', 'model', 'ancestral_2steps_w0_seed3', 'grid.png')}" in result.stdout


def test_eval_of_a_weights_file_reports_under_the_current_directory(weights, cwd):
    result = invoke("eval", weights, "--metrics", "loss_t", "--data-batches", 1, "--device", "cpu",
                    "--set", "train.test_loss_timesteps=[10]")
    assert result.exit_code == 0, result.output
    assert listing(weights.parent) == ["model.safetensors"]
    report = Path("generated", "model", "eval", "step_00000002.json")
    assert (cwd / report).is_file() and f"wrote {report}" in result.output


def test_a_task_command_on_a_checkpoint_out_of_its_run_writes_under_the_current_directory(
        trained_toy, tmp_path, cwd, read_only):
    loose = tmp_path / "elsewhere" / "best.pt"
    loose.parent.mkdir()
    shutil.copy(trained_toy.checkpoint, loose)
    read_only(loose.parent)
    result = invoke("variations", loose, "--t", 0, "--n", 1, "--indices", 0, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert listing(loose.parent) == ["best.pt"]
    out = Path("generated", "best", "variations", "variations.png")
    assert (cwd / out).is_file() and f"wrote {out}" in result.stdout


def test_out_still_wins(weights, cwd, tmp_path):
    result = invoke("variations", weights, "--t", 0, "--n", 1, "--indices", 0, "--out", tmp_path / "mine")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mine" / "variations.png").is_file() and not (cwd / "generated").exists()


def test_a_run_directory_and_a_checkpoint_in_it_write_into_the_run(trained_toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = trained_toy.run_dir
    for source in (run_dir, trained_toy.checkpoint):
        assert default_out(source, trained_toy, "interpolate") == run_dir / "generated" / "interpolate"
        assert default_out(source, trained_toy, "eval", "step_1.json", in_run="") == run_dir / "eval" / "step_1.json"
    assert os.listdir(tmp_path) == []  # deciding writes nothing
