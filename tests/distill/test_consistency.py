"""Consistency distillation (Song et al. 2023) and tuning (Geng et al. 2024) on Gaussian data, EDM's process.

The teacher is the exact EDM denoiser of data N(0, S^2) (its network F = 0: with sigma_data = S, D = c_skip x
is exact). The consistency function is known in closed form, f(x, sigma) = x sqrt(eps^2 + S^2) / sqrt(sigma^2 +
S^2), and one step of it from x_T ~ N(0, 80^2) gives the data's moments; the teacher's denoiser in one step
gives the mean alone. The rig's network is linear in x (the exact f is), with a coefficient per knot of the
noise label (tests/_distill.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from _distill import rig  # noqa: F401 (the autouse fixture)
from _distill import S, close_to_data, exact_consistency, moments, set_exact, write

import gentool

pytestmark = pytest.mark.usefixtures("one_thread")
TEACHER = {"name": "edm", "sigma_data": 0.5}


def recipe(tmp_path, name: str, objective: dict, knots: list[float], steps: int = 0, lr: float = 0.02,
           batch: int = 128) -> dict:
    return {
        "run": {"name": name, "output_dir": (tmp_path / "runs").as_posix(), "device": "cpu", "seed": 0},
        "data": {"name": "gaussian", "n": 4096},
        "process": {"name": "edm"},
        "denoiser": {"name": "knots", "knots": knots},
        "objective": objective,
        "train": {"steps": steps, "batch_size": batch, "lr": lr, "lr_schedule": "cosine", "warmup_steps": 0,
                  "ema_decay": 0.0, "checkpoint_every": 10_000, "log_every": 50, "preview_every": 0},
        "sampler": {"name": "consistency" if "teacher" in objective else "heun", "steps": 1},
    }


def runs(tmp_path, objective: dict, knots: list[float], steps: int, **kw):
    """(teacher, student): the teacher's recipe and the student's, built, the student given the teacher."""
    teacher = gentool.build(gentool.load_recipe(write(tmp_path / "teacher.toml", recipe(
        tmp_path, "teacher", TEACHER, knots))), device="cpu")
    student = gentool.build(gentool.load_recipe(write(tmp_path / "student.toml", recipe(
        tmp_path, "student", {"teacher": "(given in code)", "teacher_objective": TEACHER, **objective}, knots,
        steps=steps, **kw))), device="cpu")
    student.objective.use_teacher(teacher)
    return teacher, student


@torch.no_grad()
def slope(run, sigma: float) -> float:
    """The sampling model's f(x, sigma) / x (it is linear in x)."""
    return float(run.denoise_fn()(torch.ones(1, 1, 1, 1), sigma).x0)


def heun_chain(sigmas: list[float]) -> list[float]:
    """The teacher's Heun steps from each level down to sigma_1, composed: x_sigma_1 / x_sigma for the exact D
    = S^2 / (sigma^2 + S^2) x (Karras et al. 2022, Algorithm 1, written out); the consistency target of CD."""
    def d(x: float, sigma: float) -> float:
        return (x - S**2 / (sigma**2 + S**2) * x) / sigma

    out = [1.0]
    for hi, lo in zip(sigmas[1:], sigmas):
        euler = 1.0 + (lo - hi) * d(1.0, hi)
        out.append(out[-1] * (1.0 + (lo - hi) * (d(1.0, hi) + d(euler, lo)) / 2))
    return out


def test_consistency_distillation_learns_the_teachers_trajectories_and_samples_in_one_and_two_steps(tmp_path):
    from gentool_distill.consistency import consistency

    process = gentool.registry().get("process", "edm").factory()
    sigmas, times = (g.double().tolist() for g in consistency(teacher="-", teacher_objective=TEACHER).grid(process))
    assert len(sigmas) == 18 and sigmas[0] == pytest.approx(0.002) and sigmas[-1] == 80.0  # the paper's N
    teacher, student = runs(tmp_path, {"name": "consistency"}, [math.log(s) / 4 for s in sigmas], steps=800)
    set_exact(teacher, times)
    assert float(teacher.model.denoiser.a.detach().abs().max()) < 1e-12  # F = 0 is the exact EDM network here
    x_T = 80 * torch.randn(4096, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    assert moments(teacher.sample(x_T=x_T, steps=1, progress=False))[1] < 0.01  # the teacher in one step: the mean

    gentool.train(student, progress=False, log=lambda m: None)
    # every level maps onto the end of the teacher's Heun trajectory through it (independently computed)
    for sigma, time, target in zip(sigmas, times, heun_chain(sigmas)):
        assert slope(student, time) == pytest.approx(target * math.sqrt(0.002**2 + S**2) / S, rel=0.02), sigma
    # ... which at N = 18 is the exact consistency function within the teacher's Heun error (5.5% at sigma = 80)
    assert slope(student, 80.0) == pytest.approx(exact_consistency(80.0), rel=0.08)
    one = student.sample(x_T=x_T, steps=1, progress=False)
    two = student.sample(x_T=x_T, steps=2, progress=False, sampler_options={"times": [times[8]]})
    assert close_to_data(one, 0.08) and close_to_data(two, 0.08), (moments(one), moments(two))


def test_ect_tunes_the_denoiser_into_the_consistency_function(tmp_path):
    sigmas = [math.exp(math.log(0.002) + (math.log(80) - math.log(0.002)) * i / 15) for i in range(16)]
    teacher, student = runs(tmp_path, {"name": "ect", "stage_steps": 150}, [math.log(s) / 4 for s in sigmas],
                            steps=900, lr=0.01, batch=512)  # six stages of ECT's defaults (q = 4)
    set_exact(teacher, sigmas)
    x_T = 80 * torch.randn(4096, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    assert moments(teacher.sample(x_T=x_T, steps=1, progress=False))[1] < 0.01

    gentool.train(student, progress=False, log=lambda m: None)
    assert slope(student, 0.01) == pytest.approx(exact_consistency(0.01), rel=0.01)  # the boundary f(x, eps) = x
    for sigma in (0.5, 1.0, 3.0, 10.0, 30.0, 80.0):  # consistency *training*: noisy targets, a looser match
        assert slope(student, sigma) == pytest.approx(exact_consistency(sigma), rel=0.12), sigma
    one = student.sample(x_T=x_T, steps=1, progress=False)
    two = student.sample(x_T=x_T, steps=2, progress=False)
    assert close_to_data(one, 0.1) and close_to_data(two, 0.12), (moments(one), moments(two))


def test_ect_pairs_follow_the_papers_mapping_on_shared_noise():
    """r = t (1 - (1 + k sigmoid(-b t)) / q^(a+1)) (Geng et al. 2024, sec. 3), at least sigma_min (where the
    model's f is x itself), and x_r = x_0 + r z with the z of x_t, written out here."""
    from gentool_distill.ect import ect

    process = gentool.registry().get("process", "edm").factory()
    objective = ect(teacher="-", teacher_objective=TEACHER, stage_steps=10)
    x0 = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    z = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.002, 0.01, 0.3, 1.0, 7.0, 80.0])
    for step, stage in ((0, 0), (25, 2)):
        objective._run = type("Run", (), {"step": step})()
        r, x_r = objective.pair(process, x0, None, t, z, x0 + t.reshape(-1, 1, 1, 1) * z)
        for i, ti in enumerate(t.tolist()):
            expected = max(ti * (1 - (1 + 8 / (1 + math.exp(ti))) / 4 ** (stage + 1)), 0.002)
            assert float(r[i]) == pytest.approx(expected, rel=1e-5)
            assert torch.allclose(x_r[i], x0[i] + expected * z[i], rtol=1e-5, atol=1e-6)
