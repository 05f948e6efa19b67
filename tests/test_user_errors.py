"""Mistakes a user makes get one clear error (file, key path, value, what to do), exit code 2, no traceback.

Each case here came from a fresh-clone review that found it crashing with a
traceback, passing ``gentool check`` and failing later, or being silently
"fixed" (e.g. 5000 sampling steps quietly becoming 1000).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from typer.testing import CliRunner

import gentool
from gentool.cli import app
from gentool.engine.checkpoint import CheckpointError, checkpoint_path
from gentool.recipe import RecipeError

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long messages


@pytest.mark.parametrize("override, key, words", [
    ("denoiser.channels=30", "denoiser.channels", "must divide by 32"),
    ("denoiser.attention_resolutions=[5]", "denoiser.attention_resolutions", "not a feature-map size"),
    ("schedule.timesteps=0", "schedule.timesteps", "at least 1"),
    ("sampler.steps=5000", "sampler.steps", "more than the schedule's T = 50"),
    ('run.device="gpu"', "run.device", "'gpu' is not a device"),
])
@pytest.mark.parametrize("quiet", [True, False], ids=["-q", "summary"])
def test_check_runs_the_factories_checks_and_names_the_key(tiny_recipe, override, key, words, quiet):
    result = invoke("check", tiny_recipe, "--set", override, *(["-q"] if quiet else []))
    assert result.exit_code == 2, result.output
    text = one_line(result.output)
    assert f"--set {override} (over {tiny_recipe}): {key}:" in text and words in text, text  # names the --set
    assert "Traceback" not in result.output


def test_check_builds_no_weights(tiny_recipe, monkeypatch):
    """The networks are built on the meta device: checking a huge recipe allocates nothing."""
    from gentool.run import validate

    seen = []
    original = torch.nn.Module.register_parameter

    def spy(self, name, param):
        if param is not None:
            seen.append(param.device.type)
        return original(self, name, param)

    monkeypatch.setattr(torch.nn.Module, "register_parameter", spy)
    validate(gentool.load_recipe(tiny_recipe, overrides=["denoiser.channels=512"]))
    assert seen and set(seen) == {"meta"}


def test_more_sampling_steps_than_timesteps_is_an_error_not_a_silent_cap():
    from gentool.diffusion import Diffusion

    diffusion = Diffusion(torch.linspace(1e-4, 0.02, 100, dtype=torch.float64))
    assert len(diffusion.timesteps(100)) == 100
    assert diffusion.timesteps(80, t_start=49) == list(range(49, -1, -1))  # SDEdit: all the remaining steps
    with pytest.raises(ValueError, match=r"steps \(101\) is more than the schedule's T = 100"):
        diffusion.timesteps(101)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_one_line_error(tiny_recipe):
    result = invoke("run", tiny_recipe, "--device", "cuda", "--no-tasks")
    assert result.exit_code == 2 and "CUDA is not available here" in one_line(result.output), result.output


def test_weights_that_do_not_fit_the_recipe_are_named(trained_toy):
    with pytest.raises(CheckpointError, match=r"do not fit the model of the recipe: \d+ tensor\(s\) of another "
                                              r"shape \(denoiser\.[\w.]+: file \(\d+"):
        gentool.load_run(trained_toy.run_dir, overrides=["denoiser.channels=64"])
    result = invoke("sample", trained_toy.run_dir, "--set", "denoiser.channels=64", "--n", "1")
    assert result.exit_code == 2 and "Was the recipe changed after training" in one_line(result.output)


def test_data_that_does_not_fit_the_denoiser_is_named_before_training(tiny_recipe):
    run = gentool.build(gentool.load_recipe(tiny_recipe, overrides=["denoiser.in_channels=3"]), device="cpu")
    with pytest.raises(RecipeError, match=r"denoiser \(unet\): the data set's images are 1x8x8 .* built for 3x8x8"):
        gentool.train(run, progress=False, log=lambda m: None)
    assert run.step == 0
    assert not run.run_dir.exists()  # the data is checked before the run directory is made: nothing left behind


def test_a_checkpoint_copied_out_of_its_run_loads_with_its_own_recipe(trained_toy, tmp_path, monkeypatch):
    lone = tmp_path / "elsewhere" / "model.pt"
    lone.parent.mkdir()
    shutil.copy(checkpoint_path(trained_toy.run_dir, 2), lone)
    run = gentool.load_run(lone)
    assert run.step == 2 and run.recipe.denoiser.options == trained_toy.recipe.denoiser.options
    for key, value in trained_toy.ema.state_dict().items():
        assert torch.equal(run.ema.state_dict()[key], value), key
    monkeypatch.chdir(tmp_path)  # its samples go to ./generated/model/, not beside the file (test_cli_sources.py)
    result = invoke("sample", lone, "--n", "2", "--steps", "2")
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "generated" / "model").glob("*/grid.png")) and sorted(lone.parent.iterdir()) == [lone]


def test_a_recipe_is_not_a_run_and_a_run_is_not_a_recipe(trained_toy, tiny_recipe):
    result = invoke("sample", tiny_recipe)
    assert result.exit_code == 2 and f"is a recipe, not a trained run: train it with `gentool run {tiny_recipe}`" \
        in one_line(result.output)
    result = invoke("run", trained_toy.run_dir)
    text = one_line(result.output)
    assert result.exit_code == 2 and "is a directory, not a recipe file" in text and "recipe.resolved.toml" in text


def test_a_file_that_is_not_a_checkpoint_never_suggests_weights_only_false(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    result = invoke("sample", bad)
    text = one_line(result.output)
    assert result.exit_code == 2 and "not a PyTorch checkpoint, or a damaged one" in text
    assert "weights_only" not in text
