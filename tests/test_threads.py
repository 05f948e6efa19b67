"""``[run] threads`` / ``--threads``: how many CPU threads torch uses, and the default."""

from __future__ import annotations

import pytest
import torch

from gentool.threads import choose_threads, default_threads, describe_threads, set_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8), (64, 32)])
def test_the_default_is_one_thread_per_two_cores(cores, expected):
    assert default_threads(cores) == expected


def test_a_count_wins_then_omp_num_threads_then_the_default(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(2) == (2, "[run] threads")
    assert choose_threads(0) == (None, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    count, why = choose_threads(0)
    assert count == default_threads() and why.startswith("default for")


def test_building_a_run_sets_the_recipes_threads_and_the_first_line_says_so(tiny_recipe, restore_threads, monkeypatch):
    import gentool

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(3)
    run = gentool.build(gentool.load_recipe(tiny_recipe, overrides=["run.threads=2", "train.steps=1"]), device="cpu")
    assert torch.get_num_threads() == 2
    log: list[str] = []
    gentool.train(run, progress=False, log=log.append)
    assert log[0].startswith("starting a new run in") and "cpu, 2 CPU threads ([run] threads)" in log[0]
    gentool.build(gentool.load_recipe(tiny_recipe), device="cpu")
    assert torch.get_num_threads() == default_threads()
    assert describe_threads(0).startswith(f"{default_threads()} CPU thread")


def test_the_first_line_suggests_more_threads_only_when_the_default_leaves_idle_cores_unused(restore_threads, monkeypatch):
    from gentool import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    torch.set_num_threads(2)
    assert describe_threads(0, idle=3.9).endswith("the cores look idle: --threads 4 may be faster")
    assert "idle" not in describe_threads(0, idle=2.0)  # another program is using the cores: no hint
    assert "idle" not in describe_threads(2, idle=3.9)  # the user chose: no hint
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert "idle" not in describe_threads(0, idle=3.9)
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(4)
    assert "idle" not in describe_threads(0, idle=3.9)  # already every core


def test_negative_threads_is_a_recipe_error(tiny_recipe):
    import gentool
    from gentool.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"run\.threads.*negative"):
        gentool.load_recipe(tiny_recipe, overrides=["run.threads=-1"])


def test_every_long_command_takes_threads():
    from typer.testing import CliRunner

    from gentool.cli import app

    for command in ("run", "sample", "eval", "bench", "inpaint", "interpolate", "variations", "animate"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "--threads" in result.output, command


def test_a_run_prints_as_one_short_line(tiny_recipe):
    import gentool

    run = gentool.build(gentool.load_recipe(tiny_recipe), device="cpu")
    text = repr(run)
    assert "\n" not in text and len(text) < 300 and text.startswith("Run(") and "step=0" in text
    assert "parameters" in text and "Conv2d" not in text
