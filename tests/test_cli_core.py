"""The core CLI end to end: list-plugins, check, run (train + sample) on a toy recipe."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import gentool
from gentool.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_list_plugins_json_lists_the_built_ins():
    result = invoke("list-plugins", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    have = {(r["kind"], r["name"]): r["plugin"] for r in rows}
    for kind, name in [("schedule", "linear"), ("schedule", "cosine"), ("schedule", "sigmoid"),
                       ("denoiser", "unet"), ("sampler", "ancestral"), ("task", "sample"),
                       ("data_source", "fashion_mnist"), ("data_source", "mnist"), ("data_source", "cifar10"),
                       ("data_source", "image_folder"), ("data_source", "toy")]:
        assert (kind, name) in have, (kind, name)
        assert have[(kind, name)]
    assert not [r for r in rows if r["kind"] == "broken"]


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_check(recipe):
    result = invoke("check", recipe, "--quiet")
    assert result.exit_code == 0, result.output


def test_check_reports_a_misspelt_key_without_traceback(tmp_path, tiny_recipe):
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny_recipe.read_text().replace("steps = 6", "stpes = 6"))
    proc = subprocess.run([sys.executable, "-m", "gentool", "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "train.stpes" in proc.stderr and "'steps'" in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_square_brackets_in_messages_are_printed_not_taken_as_markup(tmp_path, tiny_recipe, monkeypatch):
    """rich reads "[data]" as a style tag and drops it; messages naming recipe tables must keep it."""
    no_data = tmp_path / "no_data.toml"
    no_data.write_text('[schedule]\nname = "linear"\n[denoiser]\nname = "unet"\n[train]\nsteps = 0\n'
                       '[[tasks]]\nname = "inpaint"\n')
    text = tiny_recipe.read_text()
    result = invoke("run", no_data, "--set", f'run.output_dir="{tmp_path.as_posix()}"')
    assert result.exit_code == 2
    assert "has no [data] table" in " ".join(result.output.split()), result.output  # the message wraps

    broken = tmp_path / "broken.toml"  # a data set that fails to build: the check table shows its message
    start, end = text.index("[data]"), text.index("[schedule]")
    broken.write_text(text[:start] + '[data]\nname = "image_folder"\nroot = "[bold]missing"\nimage_size = 8\n\n'
                      + text[end:])
    result = invoke("check", broken)
    assert result.exit_code == 0, result.output
    assert "[bold]missing" in result.stdout, result.stdout


def test_check_prints_the_summary(tiny_recipe):
    result = invoke("check", tiny_recipe)
    assert result.exit_code == 0
    assert "denoiser parameters" in result.stdout and "64 images" in result.stdout


def test_run_trains_writes_a_checkpoint_and_a_sample_grid(tiny_recipe, tmp_path):
    result = invoke("run", tiny_recipe)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "recipe.resolved.toml").exists()
    assert (run_dir / "checkpoints" / "step_00000006.pt").exists()
    grid = Image.open(run_dir / "sample" / "grid.png")
    assert grid.size[0] > 8 and len(list((run_dir / "sample" / "images").glob("*.png"))) == 4
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines][-1] == 6 and all(l["loss"] > 0 for l in lines)
    # the trained run loads back from its directory with the same weights
    run = gentool.load_run(run_dir, device="cpu")
    assert run.step == 6
    # --set reaches the recipe, and a second run resumes instead of starting over
    again = invoke("run", tiny_recipe, "--set", "train.steps=8", "--no-tasks")
    assert again.exit_code == 0
    assert "resuming from" in again.output
    assert gentool.load_run(run_dir).step == 8


def test_python_api_mirrors_the_cli(tiny_recipe):
    recipe = gentool.load_recipe(tiny_recipe, overrides=["train.steps=2"])
    run = gentool.build(recipe, device="cpu")
    gentool.train(run, progress=False, log=lambda m: None)
    x = run.sample(3, steps=5, progress=False)
    assert x.shape == (3, 1, 8, 8) and bool(x.isfinite().all())
    assert float(x.abs().max()) <= 1.0 + 1e-6


def test_run_prints_each_tasks_files_as_the_task_finishes(tiny_recipe):
    """In a log the lines of a task's files follow that task, not all of them after the last task."""
    tiny_recipe.write_text(tiny_recipe.read_text() + '\n[[tasks]]\nname = "animate"\nn = 1\nframes = 2\nsteps = 2\n'
                           'forward = false\n', encoding="utf-8")
    result = invoke("run", tiny_recipe, "--set", "train.steps=2")  # stdout and stderr in the order written
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = {key: next(i for i, line in enumerate(lines) if key in line)
          for key in ("task sample", "sample/grid.png", "task animate", "animate/reverse.gif")}
    assert at["task sample"] < at["sample/grid.png"] < at["task animate"] < at["animate/reverse.gif"], lines


def test_two_tasks_of_one_name_write_into_their_own_folders(tiny_recipe):
    """Issue 23: two [[tasks]] name = "sample" used to share RUN_DIR/sample, the second overwriting the first."""
    tiny_recipe.write_text(tiny_recipe.read_text() + '\n[[tasks]]\nname = "sample"\nn = 3\nsteps = 2\nseed = 7\n',
                           encoding="utf-8")
    result = invoke("run", tiny_recipe, "--set", "train.steps=1")
    assert result.exit_code == 0, result.output
    run_dir = Path(gentool.load_recipe(tiny_recipe).run_dir)
    first, second = sorted((run_dir / "sample" / "images").glob("*.png")), sorted((run_dir / "sample_2" / "images").glob("*.png"))
    assert len(second) == 3 and len(first) != 3, (first, second)
    assert "task sample_2" in result.output
