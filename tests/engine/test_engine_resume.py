"""Checkpoints that lose nothing: exact resume after SIGKILL, SIGTERM saves, corrupt files, recipe changes."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import torch
from typer.testing import CliRunner
from _engine_util import ROOT, assert_same_tensors, checkpoint, env, gentool_cmd, run_gentool, wait_for
from _tiny import build, quiet_train, write_recipe

import gentool
from gentool.cli import app
from gentool.engine import checkpoint as ckpt
from gentool.engine.train import RecipeMismatchError, RunDirectoryError

STEPS = 24
pytestmark = pytest.mark.usefixtures("one_thread")


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_killed_with_sigkill_resumes_to_bit_identical_weights(tmp_path):
    # dropout, label dropout (a conditioner) and gradient accumulation all draw random numbers
    kw = dict(steps=STEPS, checkpoint_every=4, dropout=0.1, class_cond=True, train="grad_accum = 2")
    straight = write_recipe(tmp_path, name="straight", **kw)
    killed = write_recipe(tmp_path, name="killed", **kw)
    runs = tmp_path / "runs"
    reference = subprocess.Popen(gentool_cmd("run", straight, "--no-tasks"), cwd=ROOT, env=env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(gentool_cmd("run", killed, "--no-tasks"), cwd=ROOT, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = runs / "killed" / "checkpoints" / "step_00000004.pt"
    wait_for(first.exists, victim, what="the first checkpoint")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert not (runs / "killed" / "checkpoints" / f"step_{STEPS:08d}.pt").exists(), "the kill came too late"

    resumed = run_gentool("run", killed, "--no-tasks")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    out, errs = reference.communicate(timeout=180)
    assert reference.returncode == 0, errs

    a, b = checkpoint(runs / "straight", STEPS), checkpoint(runs / "killed", STEPS)
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["ema"], b["ema"], "ema")
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_same_tensors(pa, pb, "optimizer state")
    # the metrics of the resumed run hold each step once, with the same values
    ma, mb = _metrics(runs / "straight"), _metrics(runs / "killed")
    assert [r["step"] for r in mb] == [r["step"] for r in ma] == list(range(2, STEPS + 1, 2))
    assert [r["loss"] for r in mb] == [r["loss"] for r in ma]


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path):
    recipe = write_recipe(tmp_path, name="term", steps=100_000, checkpoint_every=100_000)
    run_dir = tmp_path / "runs" / "term"
    proc = subprocess.Popen(gentool_cmd("run", recipe), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").stat().st_size > 0,
             proc, what="the first metrics line")
    proc.send_signal(signal.SIGTERM)
    _, errs = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, errs
    saved = ckpt.list_checkpoints(run_dir)
    assert len(saved) == 1, saved
    step = ckpt.step_of(saved[0])
    assert 2 <= step < 100_000
    assert f"interrupted by SIGTERM: saved {saved[0]} at step {step}" in " ".join(errs.split())
    assert ckpt.load_checkpoint(saved[0])["step"] == step


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    recipe = write_recipe(tmp_path, steps=6, checkpoint_every=2)
    run = build(recipe)
    quiet_train(run)
    run_dir = run.run_dir
    bad = run_dir / "checkpoints" / "step_00000006.pt"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])

    with pytest.warns(UserWarning, match=str(bad)):  # loading for sampling warns and falls back
        assert gentool.load_run(run_dir, device="cpu").step == 4

    again = build(recipe, "train.steps=8")
    result, log = quiet_train(again)
    warning = next(m for m in log if m.startswith("warning:"))
    assert str(bad) in warning and "unreadable checkpoint" in warning and "falling back" in warning
    assert any(f"resuming from {run_dir / 'checkpoints' / 'step_00000004.pt'} (step 4" in m for m in log)
    assert result.step == 8 and result.resumed_from == 4
    assert (run_dir / "checkpoints" / "step_00000006.pt.corrupt").exists()
    assert ckpt.load_checkpoint(run_dir / "checkpoints" / "step_00000006.pt")["step"] == 6  # written afresh


# trained_toy_copy (conftest): the toy recipe trained 2 steps (a checkpoint at 2), its run copied under tmp_path


def test_a_different_recipe_is_refused_unless_forced(trained_toy_copy):
    recipe = trained_toy_copy
    with pytest.raises(RecipeMismatchError, match=r"train\.lr: 0\.001 -> 0\.01"):
        quiet_train(build(recipe, "train.lr=0.01", "train.steps=4"))
    # bookkeeping keys (steps, log_every, ...) are not a different recipe
    result, log = quiet_train(build(recipe, "train.steps=3", "train.log_every=1"))
    assert result.resumed_from == 2 and result.step == 3
    result, log = quiet_train(build(recipe, "train.lr=0.01", "train.steps=4"), force=True)
    assert result.step == 4 and any("--force" in m and "train.lr" in m for m in log)


def test_the_cli_refuses_a_mismatch_with_a_message_and_no_traceback(trained_toy_copy):
    recipe = trained_toy_copy
    result = CliRunner().invoke(app, ["run", str(recipe), "--set", "denoiser.channels=64", "--no-tasks"])
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "different recipe" in message and "denoiser.channels: 32 -> 64" in message
    assert "--force" in message and "Traceback" not in result.output


def test_no_resume_over_old_checkpoints_needs_force_and_moves_them_aside(trained_toy_copy):
    recipe = trained_toy_copy
    run = build(recipe)
    with pytest.raises(RunDirectoryError, match="already holds checkpoints"):
        quiet_train(build(recipe), resume=False)
    result, log = quiet_train(build(recipe), resume=False, force=True)
    assert result.resumed_from == 0 and result.step == 2
    assert len(list(run.run_dir.glob("checkpoints.replaced-*"))) == 1


def test_leftover_temporary_files_are_removed_and_never_resumed(trained_toy_copy):
    recipe = trained_toy_copy
    run = build(recipe)
    tmp = run.run_dir / "checkpoints" / ".step_00000004.pt.abc.tmp"
    tmp.write_bytes(b"half a checkpoint")
    result, _ = quiet_train(build(recipe, "train.steps=3"))
    assert result.resumed_from == 2 and not tmp.exists()
    state = ckpt.load_checkpoint(run.run_dir / "checkpoints" / "step_00000003.pt")
    assert state["data"] == {"step": 3, "seed": 3, "batch_size": 8, "world": 1}
    assert set(state["rng"][0]) >= {"torch", "python", "numpy", "generator"}
    assert state["model"].keys() == build(recipe).model.state_dict().keys()  # plain names, no wrapper prefixes
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.fixture
def sigint_default():
    """SIGINT with Python's own handler, whatever the suite was started with (``&`` ignores it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_the_same_signal_twice_stops_at_once_but_a_different_one_does_not(sigint_default):
    import os

    from gentool.engine.signals import StopRequest

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun's answer to a Ctrl-C: keep saving
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored():
    """A job started with SIGINT ignored (``cmd &`` in a script, nohup) is not stopped by a Ctrl-C meant for others."""
    import os

    from gentool.engine.signals import StopRequest

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequest() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert not stop.requested
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # SIGTERM still saves and stops
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_run_that_trains_nothing_keeps_the_resolved_recipe(trained_toy_copy):
    """``--set train.steps=1`` on a run trained to 2 trains nothing and leaves the recipe its checkpoints match."""
    run = build(trained_toy_copy)
    resolved = run.run_dir / "recipe.resolved.toml"
    before = resolved.read_text(encoding="utf-8")
    assert "steps = 2" in before
    result, log = quiet_train(build(trained_toy_copy, "train.steps=1"))
    assert result.step == 2 and any("nothing to do" in m for m in log)
    assert resolved.read_text(encoding="utf-8") == before
    result, _ = quiet_train(build(trained_toy_copy, "train.steps=3"))  # training on does rewrite it
    assert result.step == 3 and "steps = 3" in resolved.read_text(encoding="utf-8")
