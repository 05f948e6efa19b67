"""A mistyped path suggests the close existing one."""

from __future__ import annotations

from typer.testing import CliRunner

from gentool.paths import closest_paths, did_you_mean


def test_a_typo_in_any_part_suggests_the_existing_sibling(tmp_path):
    (tmp_path / "runs" / "fashion_mnist" / "checkpoints").mkdir(parents=True)
    assert closest_paths(tmp_path / "runs" / "fashion-mnist") == [tmp_path / "runs" / "fashion_mnist"]
    assert closest_paths(tmp_path / "rnus" / "fashion_mnist") == [tmp_path / "runs" / "fashion_mnist"]
    assert did_you_mean(tmp_path / "runs" / "cifar") == ""
    assert did_you_mean(tmp_path / "runs" / "fashion_mnist") == ""  # it exists: nothing to suggest


def test_gentool_sample_of_a_mistyped_run_names_the_right_one(tmp_path, monkeypatch):
    from gentool.cli import app

    (tmp_path / "runs" / "fashion_mnist").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["sample", "runs/fashion-mnist"])
    assert result.exit_code == 2
    assert "runs/fashion-mnist: no such run directory or checkpoint; did you mean runs/fashion_mnist?" in result.output


def test_an_error_in_a_set_value_names_the_set_option(tiny_recipe):
    import pytest

    import gentool
    from gentool.recipe import RecipeError

    with pytest.raises(RecipeError) as info:
        gentool.load_recipe(tiny_recipe, overrides=["train.steps=abc"])
    assert str(info.value).startswith(f"--set train.steps=abc (over {tiny_recipe}): train.steps: ")
    with pytest.raises(RecipeError) as info:
        gentool.load_recipe(tiny_recipe, overrides=["train.stepz=3"])
    assert str(info.value).startswith("--set train.stepz=3") and "did you mean 'steps'" in str(info.value)
