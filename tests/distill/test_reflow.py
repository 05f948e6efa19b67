"""Reflow (Liu et al. 2022) on Gaussian data, the flow process, where the teacher's ODE map is known.

The teacher is the exact velocity of data N(0, S^2) on x_t = (1 - t) x_0 + t eps: its ODE maps noise z to S z,
so one Euler step of it (from t = 1, where it predicts x_0 = 0) gives the mean alone. Reflow trains on the pairs
(z, ODE(z)) = (z, c z), whose straight-line velocity (1 - c) z is constant along each path: one Euler step of the
student then lands on c z, the teacher's many-step answer, with the data's moments.
"""

from __future__ import annotations

import pytest
import torch
from _distill import S, close_to_data, moments, rig, set_exact, write  # noqa: F401 (rig: the autouse fixture)

import gentool

pytestmark = pytest.mark.usefixtures("one_thread")
TEACHER = {"name": "flow_matching"}
KNOTS = [i / 64 for i in range(65)]  # the times t the rig's network has a coefficient for (1000 t: its label)


def recipe(tmp_path, name: str, objective: dict, steps: int = 0) -> dict:
    return {
        "run": {"name": name, "output_dir": (tmp_path / "runs").as_posix(), "device": "cpu", "seed": 0},
        "data": {"name": "gaussian", "n": 512},
        "process": {"name": "flow"},
        "denoiser": {"name": "knots", "knots": [1000 * t for t in KNOTS]},
        "objective": objective,
        "train": {"steps": steps, "batch_size": 128, "lr": 0.02, "lr_schedule": "cosine", "warmup_steps": 0,
                  "ema_decay": 0.0, "checkpoint_every": 10_000, "log_every": 50, "preview_every": 0},
        "sampler": {"name": "euler", "steps": 1, "spacing": "uniform"},
    }


def test_reflow_samples_the_data_in_one_euler_step(tmp_path):
    teacher = gentool.build(gentool.load_recipe(write(tmp_path / "teacher.toml", recipe(
        tmp_path, "teacher", TEACHER))), device="cpu")
    set_exact(teacher, KNOTS)
    z = torch.randn(4096, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    ode = teacher.sample(x_T=z, sampler="heun", steps=32, progress=False, sampler_options={"spacing": "uniform"})
    assert torch.allclose(ode, S * z, atol=5e-3), float((ode - S * z).abs().max())  # the teacher's ODE: S z
    assert moments(teacher.sample(x_T=z, steps=1, progress=False))[1] < 1e-3  # one step: x_0 = 0, the mean

    student = gentool.build(gentool.load_recipe(write(tmp_path / "student.toml", recipe(
        tmp_path, "student", {"name": "reflow", "teacher": "(given in code)", "teacher_objective": TEACHER,
                             "pair_steps": 8}, steps=400))), device="cpu")
    student.objective.use_teacher(teacher)
    gentool.train(student, progress=False, log=lambda m: None)
    one = student.sample(x_T=z, steps=1, progress=False)
    assert close_to_data(one, 0.03), moments(one)
    error = float((one - S * z).square().mean().sqrt())
    assert error < 0.04 * S, error  # the teacher's ODE's sample from the same noise (rms, relative to S)
    two = student.sample(x_T=z, steps=2, progress=False)
    assert close_to_data(two, 0.03), moments(two)
