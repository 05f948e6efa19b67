"""The generation tasks end to end: from a recipe's [[tasks]] after training, and from the CLI on its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny import recipe_text
from PIL import Image
from typer.testing import CliRunner

import gentool
from gentool.cli import app

runner = CliRunner()

TASKS_TOML = """[[tasks]]
name = "inpaint"
indices = [0, 1, 2, 3]
mask = "centre"
resamplings = 2
jump_length = 10

[[tasks]]
name = "interpolate"
frames = 3
steps = 10

[[tasks]]
name = "variations"
n = 2
indices = [0, 1]
t = 0.3

[[tasks]]
name = "animate"
n = 4
frames = 4
steps = 10
indices = [0]

[[tasks]]
name = "schedules"
names = ["linear", "cosine", "sigmoid"]"""

TASKS = ["inpaint", "interpolate", "variations", "animate", "schedules"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the tiny recipe for 5 steps and run its [[tasks]], as ``gentool run`` does."""
    root = tmp_path_factory.mktemp("cli_tasks")
    path = root / "tiny_tasks.toml"
    path.write_text(recipe_text((root / "runs").as_posix(), name="tiny_tasks", run='device = "cpu"', data="n = 32",
                                train="steps = 5\nbatch_size = 8", tail=TASKS_TOML), encoding="utf-8")
    result = gentool.run_recipe(path, progress=False, log=lambda message: None)
    return result


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def written(output: str) -> list[Path]:
    return [Path(line.split("wrote ", 1)[1].strip()) for line in output.splitlines() if line.startswith("wrote ")]


def test_recipe_tasks_run_after_training(trained):
    assert trained.run.step == 5 and trained.run.checkpoint is not None
    assert [name for name, _ in trained.tasks] == TASKS
    for name, result in trained.tasks:
        assert result.files, name
        for f in result.files:
            assert f.is_file() and f.parent == trained.run.run_dir / name
    metrics = dict(trained.tasks)["inpaint"].metrics
    assert metrics["known_max_error"] == 0.0
    with Image.open(trained.run.run_dir / "animate" / "reverse.gif") as gif:
        assert gif.n_frames == 4


@pytest.mark.parametrize("command,args,expect", [
    ("inpaint", ["--mask", "strokes", "--fraction", "0.3", "--indices", "0", "--indices", "2", "--steps", "10"],
     {"inpaint.png", "results.png"}),
    ("inpaint", ["--mask", "left", "--resamplings", "2", "--jump-length", "5", "--indices", "1"],
     {"inpaint.png", "results.png"}),
    ("interpolate", ["--mode", "slerp", "--frames", "3", "--rows", "2", "--steps", "5"],
     {"interpolation.png", "interpolation.gif"}),
    ("interpolate", ["--frames", "3", "--t", "0.4", "--indices", "0", "--indices", "1"],
     {"inputs.png", "interpolation.png", "interpolation.gif"}),
    ("variations", ["--t", "0.2", "--n", "2", "--indices", "3"], {"variations.png"}),
    ("animate", ["--frames", "3", "--n", "4", "--steps", "8", "--no-forward"], {"reverse.png", "reverse.gif"}),
])
def test_cli_runs_the_task_on_the_checkpoint(trained, tmp_path, command, args, expect):
    result = invoke(command, trained.run.checkpoint, "--out", tmp_path / command, "--device", "cpu", *args)
    assert result.exit_code == 0, result.output
    files = written(result.stdout)
    assert {f.name for f in files} == expect
    assert all(f.is_file() and f.parent == tmp_path / command for f in files)


def test_cli_writes_into_the_run_directory_by_default_beside_the_recipes_task_outputs(trained):
    result = invoke("variations", trained.run.run_dir, "--t", "0", "--n", "1", "--indices", "0")
    assert result.exit_code == 0, result.output
    # RUN_DIR/variations is the recipe's own task output (if it has one): the command never overwrites it
    assert written(result.stdout) == [trained.run.run_dir / "generated" / "variations" / "variations.png"]
    assert "mse_to_input = 0" in result.stdout  # t = 0 returns the input


def test_cli_schedules_plot(tmp_path):
    result = invoke("schedules", "linear", "cosine", "-T", "100", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert written(result.stdout) == [tmp_path / "schedules.png"]
    with Image.open(tmp_path / "schedules.png") as im:
        assert im.format == "PNG" and im.width > 200
    # the cosine schedule of Nichol and Dhariwal ends at (almost) no signal, the linear one of T = 100 does not
    linear = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), 0)[-1]
    assert f"linear.alphas_cumprod_T = {float(linear):.4g}" in result.stdout
    assert "cosine.alphas_cumprod_T = " in result.stdout


def test_cli_task_options_come_from_the_task_signature():
    result = invoke("inpaint", "--help")
    assert result.exit_code == 0
    for option in ("--mask", "--mask-file", "--resamplings", "--jump-length", "--sampler", "--out"):
        assert option in result.stdout


@pytest.mark.parametrize("args,message", [
    (["variations", "{ckpt}", "--t", "2"], "t must be in [0, 1]"),
    (["inpaint", "{ckpt}", "--sampler", "nosuch"], "unknown sampler 'nosuch'"),
    (["interpolate", "{ckpt}", "--indices", "0"], "pairs"),
    (["variations", "{ckpt}", "--indices", "-1"], "indices must be in 0.."),
    (["animate", "{missing}"], "no such run directory"),
])
def test_cli_user_errors_are_one_line(trained, tmp_path, args, message):
    fill = {"{ckpt}": str(trained.run.checkpoint), "{missing}": str(tmp_path / "nope")}
    result = runner.invoke(app, [fill.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_cli_rejects_a_bad_preset_name(trained):
    result = runner.invoke(app, ["inpaint", str(trained.run.checkpoint), "--mask", "centr"])
    assert result.exit_code == 2 and "centre" in result.output
