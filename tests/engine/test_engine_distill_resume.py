"""A distillation run resumes exactly after a kill: the teacher of its round comes back from the checkpoint.

``gentool distill`` trains two students of the same teacher, one straight through and one killed with
SIGKILL in its second round (its teacher is then the first round's student, saved in the checkpoint) and
run again; the final weights, EMA, optimiser state, the teacher they hold and the metrics are identical.
The conditional teacher with dropout and p_uncond makes every kind of random draw count.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from _engine_util import ROOT, assert_same_tensors, checkpoint, env, gentool_cmd, run_gentool, wait_for
from _tiny import build, quiet_train, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
ROUND = 20
OPTIONS = ["--set", "objective.teacher_steps=8", "--set", "objective.rounds=2", "--set",
           f"objective.steps_per_round={ROUND}", "--set", "train.checkpoint_every=4", "--set", "train.log_every=2",
           "--no-tasks"]


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_distillation_killed_with_sigkill_in_its_second_round_resumes_bit_identically(tmp_path):
    teacher = write_recipe(tmp_path, name="teacher", steps=2, dropout=0.1, class_cond=True,
                           train='\n[objective]\nname = "ddpm"\nprediction = "v"')
    quiet_train(build(teacher))
    runs = tmp_path / "runs"
    cmd = [*gentool_cmd("distill", runs / "teacher", "--method", "progressive"), *OPTIONS]
    reference = subprocess.Popen([*cmd, "--name", "straight"], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([*cmd, "--name", "killed"], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    second_round = runs / "killed" / "checkpoints" / f"step_{ROUND + 4:08d}.pt"
    wait_for(second_round.exists, victim, what="a checkpoint of the second round")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert not (runs / "killed" / "checkpoints" / f"step_{2 * ROUND:08d}.pt").exists(), "the kill came too late"

    resumed = run_gentool("distill", runs / "teacher", "--method", "progressive", "--name", "killed", *OPTIONS)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "copied when this distillation began" in resumed.stderr
    _, errs = reference.communicate(timeout=180)
    assert reference.returncode == 0, errs

    a, b = checkpoint(runs / "straight", 2 * ROUND), checkpoint(runs / "killed", 2 * ROUND)
    for key in ("model", "ema"):
        assert_same_tensors(a[key], b[key], key)
    assert a["objective"]["round"] == b["objective"]["round"] == 1
    assert_same_tensors(a["objective"]["teacher"], b["objective"]["teacher"], "the second round's teacher")
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_same_tensors(pa, pb, "optimizer state")
    ma, mb = _metrics(runs / "straight"), _metrics(runs / "killed")
    assert [r["step"] for r in mb] == [r["step"] for r in ma] == list(range(2, 2 * ROUND + 1, 2))
    assert [r["loss"] for r in mb] == [r["loss"] for r in ma]
    assert [r["student_steps"] for r in ma if r["step"] in (ROUND, 2 * ROUND)] == [4, 2]
