"""``[run] threads`` / ``--threads``: how many CPU threads torch uses, and the default."""

from __future__ import annotations

import pytest
import torch

from gentool.threads import choose_threads, default_threads, describe_threads


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


def test_a_new_training_run_takes_every_idle_core_and_half_of_busy_ones(monkeypatch):
    from gentool import threads
    from gentool.threads import training_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    assert training_threads(0, idle=3.8) == (4, "the 4 cores are idle")
    count, why = training_threads(0, idle=2.0)
    assert count == 2 and why.endswith("the cores are busy")
    assert training_threads(3, idle=3.8) == (3, "[run] threads")  # the user's count wins
    assert training_threads(0, recorded=1, idle=3.8) == (1, "as the checkpoint was trained: an exact resume")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert training_threads(0, idle=3.8) == (None, "OMP_NUM_THREADS")


def test_idle_cores_are_measured_while_this_process_sleeps(monkeypatch):
    """An install that just ended raises the 1-minute load average but not the idle time now."""
    from gentool import threads

    samples = iter([(100.0, 200.0), (150.0, 250.0)])  # 50 of 50 jiffies idle: every core
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.9, 1.0, 1.0))
    assert threads.idle_cores_now(window=0.0) == 2.0
    samples = iter([(100.0, 200.0), (125.0, 250.0)])  # half the time busy: one core
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    assert threads.idle_cores_now(window=0.0) == 1.0


def test_a_resumed_run_takes_the_count_it_was_trained_with_so_the_resume_is_exact(tiny_recipe, restore_threads,
                                                                                   monkeypatch):
    """Trained at 2 threads on an idle machine, killed, resumed on a busy one: the resume keeps 2 threads and the
    weights equal those of an uninterrupted run at 2 threads (with 1 they differ: the count matters)."""
    import gentool
    from gentool import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    idle = {"now": 2.0}
    monkeypatch.setattr(threads, "idle_cores_now", lambda window=0.25: idle["now"])

    def train(name, steps):
        run = gentool.build(gentool.load_recipe(tiny_recipe, overrides=[f"run.name={name}", f"train.steps={steps}",
                                                                        "train.checkpoint_every=2"]), device="cpu")
        log: list[str] = []
        gentool.train(run, progress=False, log=log.append)
        return run, log

    whole, log = train("whole", 4)
    assert "2 CPU threads (the 2 cores are idle)" in log[0]
    train("parts", 2)
    idle["now"] = 0.3  # the machine is busy when the run resumes
    resumed, log = train("parts", 4)
    assert "2 CPU threads (as the checkpoint was trained: an exact resume)" in next(m for m in log if "resuming" in m)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
