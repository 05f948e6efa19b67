"""The Gaussian diffusion maths against closed forms (Ho et al. 2020, eqs. 4-7, 11)."""

import numpy as np
import pytest
import torch

from gentool import Diffusion

T = 100


@pytest.fixture
def d():
    return Diffusion(torch.linspace(1e-4, 0.2, T, dtype=torch.float64))


def test_timestep_convention_is_zero_based(d):
    # gentool's t = 0 is the paper's t = 1: abar_1 = alpha_1 = 1 - beta_1
    assert float(d.alphas_cumprod_64[0]) == pytest.approx(1 - 1e-4, rel=1e-12)
    # and t = T - 1 is the paper's x_T: prod over all T alphas
    assert float(d.alphas_cumprod_64[T - 1]) == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.2, T)), rel=1e-10)
    # q_sample at t = 0 adds exactly beta_1 of noise variance
    x0 = torch.zeros(1, 1)
    noise = torch.ones(1, 1)
    x1 = d.q_sample(x0, torch.tensor([0]), noise)
    assert float(x1) == pytest.approx(1e-4**0.5, rel=1e-6)


def test_q_sample_has_closed_form_mean_and_variance(d):
    gen = torch.Generator().manual_seed(0)
    n, t = 200_000, 40
    x0 = torch.full((n, 1), 0.7)
    noise = torch.randn(n, 1, generator=gen)
    xt = d.q_sample(x0, torch.full((n,), t), noise)
    abar = float(np.prod(1 - np.linspace(1e-4, 0.2, T)[: t + 1]))
    assert float(xt.mean()) == pytest.approx(abar**0.5 * 0.7, abs=5e-3)
    assert float(xt.var()) == pytest.approx(1 - abar, rel=1e-2)
    mean, var = d.q_mean_variance(x0[:1], torch.tensor([t]))
    assert float(mean) == pytest.approx(abar**0.5 * 0.7, rel=1e-6)
    assert float(var) == pytest.approx(1 - abar, rel=1e-6)


def test_posterior_is_the_bayes_product_of_two_gaussians(d):
    # q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): combine the two Gaussians in x_{t-1} by hand
    betas = np.linspace(1e-4, 0.2, T)
    abar = np.cumprod(1 - betas)
    t, x0, xt = 30, 0.3, -0.8
    a_t, b_t, abar_prev = 1 - betas[t], betas[t], abar[t - 1]
    # likelihood in x_{t-1}: x_t ~ N(sqrt(a_t) x_{t-1}, b_t) -> precision a_t/b_t, mean xt/sqrt(a_t)
    prec = a_t / b_t + 1 / (1 - abar_prev)
    mean = (np.sqrt(a_t) * xt / b_t + np.sqrt(abar_prev) * x0 / (1 - abar_prev)) / prec
    m, v, logv = d.q_posterior(torch.tensor([[x0]]), torch.tensor([[xt]]), torch.tensor([t]))
    assert float(m) == pytest.approx(mean, rel=1e-5)
    assert float(v) == pytest.approx(1 / prec, rel=1e-5)
    assert float(logv) == pytest.approx(np.log(1 / prec), rel=1e-5)


def test_posterior_variance_at_first_step_is_zero_and_log_is_clipped(d):
    assert float(d.posterior_variance[0]) == 0.0
    assert float(d.posterior_log_variance_clipped[0]) == pytest.approx(float(torch.log(d.posterior_variance[1])))


def test_parameterisations_round_trip(d):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 2, 2, generator=gen) * 2 - 1
    eps = torch.randn(4, 3, 2, 2, generator=gen)
    t = torch.tensor([0, 10, 50, 99])
    xt = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.x0_from_eps(xt, t, eps), x0, atol=2e-4, rtol=0)
    torch.testing.assert_close(d.to_eps(x0, xt, t, "x0"), eps, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(d.to_eps(d.v_target(x0, t, eps), xt, t, "v"), eps, atol=1e-5, rtol=0)


def test_reverse_mean_is_equation_11(d):
    # mu_theta(x_t, t) = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps)  (unclipped)
    betas = np.linspace(1e-4, 0.2, T)
    abar = np.cumprod(1 - betas)
    t, xt, eps = 60, 0.4, -0.3
    expected = (xt - betas[t] / np.sqrt(1 - abar[t]) * eps) / np.sqrt(1 - betas[t])
    out = d.p_mean_variance(torch.tensor([[eps]]), torch.tensor([[xt]]), torch.tensor([t]), clip_denoised=False)
    assert float(out["mean"]) == pytest.approx(expected, rel=1e-5)
    assert float(out["variance"]) == pytest.approx(betas[t], rel=1e-6)


def test_respaced_timesteps_start_and_end_where_asked(d):
    assert d.timesteps() == list(range(T - 1, -1, -1))
    ts = d.timesteps(10)
    assert ts[0] == T - 1 and ts[-1] == 0 and len(ts) == 10
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert d.timesteps(5, t_start=20) == [20, 15, 10, 5, 0]
    with pytest.raises(ValueError):
        d.timesteps(5, t_start=T)


def test_l_simple_is_the_mean_squared_noise_error(d):
    x0 = torch.zeros(2, 1, 2, 2)
    noise = torch.ones(2, 1, 2, 2)
    out = torch.zeros(2, 1, 2, 2)
    loss = d.training_loss(out, x0, torch.tensor([0, 5]), noise)
    torch.testing.assert_close(loss, torch.ones(2))
    assert d.training_loss(out, x0, torch.tensor([0, 5]), 3 * noise, loss="l1").tolist() == [3.0, 3.0]


@pytest.mark.parametrize("betas", [[1.0, 0.1], [0.1, 1.5], [0.0, 0.1], [0.1, -0.1]])
def test_betas_outside_zero_one_are_refused(betas):
    with pytest.raises(ValueError, match="beta"):
        Diffusion(torch.tensor(betas))


def test_only_the_last_beta_may_be_one():
    # zero terminal SNR (Lin et al. 2024): alpha-bar at the last step is exactly 0
    assert float(Diffusion(torch.tensor([0.1, 1.0])).alphas_cumprod_64[-1]) == 0.0
