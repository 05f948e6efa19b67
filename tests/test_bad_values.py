"""Every bad value is refused by ``gentool check`` (and the command line) before any compute, in one line.

Each case came from a sweep that found it accepted by ``check`` and failing
later (after training, or as an 8 TB allocation), or silently ignored.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gentool.cli import app
from gentool.options import OptionError, check_options

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def check(recipe, *sets: str):
    args = ["check", str(recipe), "-q"]
    for s in sets:
        args += ["--set", s]
    return runner.invoke(app, args, catch_exceptions=False)


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("override, key, words", [
    ("train.lr=nan", "train.lr", "must be a finite number, got nan"),
    ("train.lr=inf", "train.lr", "must be a finite number, got inf"),
    ("train.grad_clip=-inf", "train.grad_clip", "finite"),
    ("schedule.beta_end=nan", "schedule.beta_end", "finite"),
    ("train.test_loss_timesteps=[1, 1000000000000000000000]", "train.test_loss_timesteps", "64 bits"),
    ("train.steps=1000000000000000000000000000000", "train.steps", "integers must fit in 64 bits"),
    ("schedule.timesteps=1000000000000", "schedule (linear)", "ask for 8,000.0 GB"),
    ('run.name="../../x"', "run.name", "not a run name"),
    ('run.name="/tmp/x"', "run.name", "not a run name"),
    ("train.batch_size=128", "train.batch_size", "128 is more than the 64 images of the train split"),
    ("data.image_size=16", "denoiser", "the data set's images are 1x16x16"),
    ("data.channels=3", "denoiser", "the data set's images are 3x8x8"),
])
def test_check_refuses_before_compute(tiny_recipe, override, key, words):
    text = error_line(check(tiny_recipe, override))
    # a --set value is named as the --set option over the recipe file (issue 18)
    assert (f"{tiny_recipe}: {key}" in text or f"(over {tiny_recipe}): {key}" in text) and words in text, text


def test_a_tasks_steps_beyond_T_names_the_file_and_key(tiny_recipe):
    tasks = tiny_recipe.read_text().count("[[tasks]]")
    with tiny_recipe.open("a") as f:
        f.write('\n[[tasks]]\nname = "sample"\nn = 4\n\n[[tasks]]\nname = "sample"\nsteps = 51\n')
    text = error_line(check(tiny_recipe))
    assert f"{tiny_recipe}: tasks.{tasks + 1}.steps: 51 is more than the schedule's T = 50" in text, text


def test_eval_steps_beyond_T(tiny_recipe):
    with tiny_recipe.open("a") as f:
        f.write("\n[eval]\nsteps = 60\n")
    assert f"{tiny_recipe}: eval.steps: 60 is more than" in error_line(check(tiny_recipe))


def test_output_dir_under_a_file_and_a_run_dir_that_is_a_file(tiny_recipe, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    text = error_line(check(tiny_recipe, f'run.output_dir="{blocker}/runs"'))
    assert "run.output_dir:" in text and f"{blocker} is a file, not a folder" in text, text
    (tmp_path / "runs").mkdir(exist_ok=True)
    (tmp_path / "runs" / "clash").write_text("x")
    text = error_line(check(tiny_recipe, 'run.name="clash"'))
    assert "run.name:" in text and "is a file, not a run directory" in text, text


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "[run]\nname = \"é\"\n".encode("latin-1")])
def test_a_binary_or_non_utf8_recipe_names_the_file(tmp_path, content):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    text = error_line(check(path))
    assert f"error: {path}: not a text file" in text and "UTF-8" in text, text


def test_option_checks_search_lists_and_tables():
    def factory(*, sizes: list[float] = [1.0], table: dict = {}):  # noqa: B006 - a signature to check against
        """Args: sizes: x. table: y."""

    with pytest.raises(OptionError, match="finite"):
        check_options(factory, {"sizes": [1.0, float("nan")]})
    with pytest.raises(OptionError, match="64 bits"):
        check_options(factory, {"table": {"a": 2**70}})
    assert check_options(factory, {"sizes": [1.0, 2.0], "table": {"a": 2**62}})["table"] == {"a": 2**62}


# -- the command line ------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--classes", ","], "--classes names no class"),
    (["--classes", " "], "--classes names no class"),
    (["--nrow", "0"], "--nrow must be at least 1, got 0"),
    (["--n", "1000000000"], "--n 1000000000: 1,000,000,000 images of 1x8x8 need at least"),
])
def test_sample_refuses_what_it_would_silently_ignore_or_cannot_fit(trained_toy, tmp_path, args, words):
    result = runner.invoke(app, ["sample", str(trained_toy.run_dir), "--steps", "2", "--out", str(tmp_path), *args],
                           catch_exceptions=False)
    text = error_line(result)
    assert words in text, text
    assert not (tmp_path / "grid.png").exists()


def test_training_labels_past_the_conditioners_classes_are_one_line(tmp_path):
    """A data set with more classes than [conditioner] num_classes: a DataError before the first step."""
    from _tiny import write_recipe

    recipe = write_recipe(tmp_path, name="labels", steps=2, class_cond=True)  # conditioner: 2 classes
    result = runner.invoke(app, ["run", str(recipe), "--no-tasks", "--set", "data.num_classes=4"],
                           catch_exceptions=False)
    text = error_line(result)
    assert "class labels must be in 0..1" in text, text


def test_a_non_finite_default_is_accepted_and_nothing_else():
    """Issue 24, defect 1: ``s_tmax = inf`` ("no upper limit") is a default; the finite check must let it load again."""
    import math

    def factory(*, s_tmax: float = math.inf, s_tmin: float = 0.0, sizes: list[float] = [1.0, math.inf]):  # noqa: B006
        """Args: s_tmax: x. s_tmin: y. sizes: z."""

    assert check_options(factory, {"s_tmax": math.inf, "sizes": [1.0, math.inf]})["s_tmax"] == math.inf
    for options in ({"s_tmax": -math.inf}, {"s_tmax": math.nan}, {"s_tmin": math.inf}, {"sizes": [math.inf, 1.0]}):
        with pytest.raises(OptionError, match="finite"):
            check_options(factory, options)


@pytest.mark.parametrize("sampler", ["heun", "euler"])
def test_a_resolved_recipe_with_an_infinite_default_loads_again(tmp_path, sampler):
    """What ``Recipe.dumps`` writes (``s_tmax = inf``, TOML's infinity) is accepted by ``load_recipe``."""
    import math
    import tomllib

    from gentool.recipe import load_recipe
    from gentool.testing import tiny_recipe

    recipe = load_recipe(data={**tiny_recipe(tmp_path), "sampler": {"name": sampler}})
    text = recipe.dumps()
    assert "s_tmax = inf" in text.splitlines(), text
    again = load_recipe(data=tomllib.loads(text))
    assert again.sampler.options["s_tmax"] == math.inf and again.to_dict() == recipe.to_dict()
