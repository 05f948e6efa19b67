"""Schedules against independent computations (numpy / closed forms)."""

import math

import numpy as np
import pytest
import torch

import gentool
from gentool import Diffusion


def schedule(name, **options):
    return gentool.registry().get("schedule", name).factory(**options)


def test_linear_is_a_linspace():
    betas = schedule("linear")
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    np.testing.assert_allclose(betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=0, atol=1e-15)


def test_cosine_alphas_cumprod_match_the_formula():
    T, s = 1000, 0.008
    d = Diffusion(schedule("cosine", timesteps=T))
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    # paper's abar(t) for t = 1..T is gentool's alphas_cumprod[t - 1]; the last betas are clipped
    expected = np.array([f(t) / f(0) for t in range(1, T + 1)])
    got = d.alphas_cumprod_64.numpy()
    np.testing.assert_allclose(got[: T - 5], expected[: T - 5], rtol=1e-9)
    assert float(schedule("cosine", timesteps=T).max()) == pytest.approx(0.999)


def test_sigmoid_matches_its_formula():
    T, b0, b1, s = 1000, 1e-4, 0.02, 6.0
    betas = schedule("sigmoid", timesteps=T, beta_start=b0, beta_end=b1, s_limit=s).numpy()
    t = np.arange(1, T + 1)  # the paper's 1-based t
    expected = b0 + 1 / (1 + np.exp(-(-s + 2 * t / T * s))) * (b1 - b0)
    np.testing.assert_allclose(betas, expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_last_alphas_cumprod_is_close_to_zero(name):
    d = Diffusion(schedule(name, timesteps=1000))
    assert float(d.alphas_cumprod_64[-1]) < 1e-3 if name != "sigmoid" else float(d.alphas_cumprod_64[-1]) < 1e-2
    assert bool((d.alphas_cumprod_64[1:] < d.alphas_cumprod_64[:-1]).all())


def test_linear_alphas_cumprod_at_T_is_tiny():
    # Ho et al.'s linear schedule leaves abar_T ~ 4e-5 (L_T ~ 1e-5 bits/dim)
    d = Diffusion(schedule("linear"))
    expected = np.prod(1 - np.linspace(1e-4, 0.02, 1000))
    assert float(d.alphas_cumprod_64[-1]) == pytest.approx(expected, rel=1e-10)
    assert expected < 1e-4


@pytest.mark.parametrize("name,options", [("linear", {"beta_start": 0.5, "beta_end": 0.1}), ("cosine", {"timesteps": 0})])
def test_bad_schedule_options_raise(name, options):
    with pytest.raises(ValueError):
        schedule(name, **options)
