"""Progressive distillation (Salimans and Ho 2022) on Gaussian data, where the exact teacher is known.

The teacher is the exact v-prediction of data N(0, S^2) on a discrete VP chain (T = 200); its deterministic
DDIM over 128 steps maps noise to samples of the data's moments (std within 3%: DDIM is first order). Seven
rounds halve the steps to 1: the student must then do in one DDIM step what the teacher does in 128 (its
samples from the same noise agree), while one DDIM step of the teacher itself gives nearly the mean alone.
"""

from __future__ import annotations

import pytest
import torch
from _distill import close_to_data, moments, rig, set_exact, write  # noqa: F401 (rig: the autouse fixture)

import gentool

T = 200
pytestmark = pytest.mark.usefixtures("one_thread")


def recipe(tmp_path, name: str, objective: dict, steps: int = 0) -> dict:
    return {
        "run": {"name": name, "output_dir": (tmp_path / "runs").as_posix(), "device": "cpu", "seed": 0},
        "data": {"name": "gaussian", "n": 512},
        "schedule": {"name": "linear", "timesteps": T, "beta_start": 5e-4, "beta_end": 0.1},
        "denoiser": {"name": "knots", "knots": list(range(T))},
        "objective": objective,
        "train": {"steps": steps, "batch_size": 128, "lr": 0.05, "warmup_steps": 0, "ema_decay": 0.0,
                  "checkpoint_every": 10_000, "log_every": 50, "preview_every": 0},
        "sampler": {"name": "ddim", "spacing": "trailing", "clip_denoised": False},
    }


def teacher_run(tmp_path):
    run = gentool.build(gentool.load_recipe(write(tmp_path / "teacher.toml", recipe(
        tmp_path, "teacher", {"name": "ddpm", "prediction": "v"}))), device="cpu")
    set_exact(run, list(range(T)))
    return run


def test_seven_rounds_distil_128_ddim_steps_into_one(tmp_path):
    teacher = teacher_run(tmp_path)
    x_T = torch.randn(4096, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    reference = teacher.sample(x_T=x_T, steps=128, progress=False)
    assert close_to_data(reference, 0.05), moments(reference)  # the teacher's 128 steps: the data
    one_step = teacher.sample(x_T=x_T, steps=1, progress=False)
    assert moments(one_step)[1] < 0.1, moments(one_step)  # the teacher's 1 step: hardly more than the mean

    objective = {"name": "progressive", "teacher": "(given in code)", "teacher_steps": 128, "rounds": 7,
                 "steps_per_round": 150}
    student = gentool.build(gentool.load_recipe(write(tmp_path / "student.toml", recipe(
        tmp_path, "student", objective, steps=1050))), device="cpu")
    student.objective.use_teacher(teacher)
    messages = []
    result = gentool.train(student, progress=False, log=messages.append)
    assert result.step == 1050
    assert student.objective.round == 6 and student.objective.student_steps(6) == 1
    distilled = student.sample(x_T=x_T, steps=1, progress=False)
    assert close_to_data(distilled, 0.05), moments(distilled)
    print(moments(reference), moments(distilled), float((distilled - reference).abs().max()))
    assert float((distilled - reference).abs().max()) < 0.05 * float(reference.abs().max())
    logged = [r for r in map(__import__("json").loads, (student.run_dir / "metrics.jsonl").read_text().splitlines())]
    assert [r["student_steps"] for r in logged if r["step"] % 150 == 0] == [64, 32, 16, 8, 4, 2, 1]
