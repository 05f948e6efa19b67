"""Samplers: the shared contract for every registered sampler, and their maths.

The maths is checked against closed forms, never against the code's own output:
the optimal denoiser of a two-point and of a Gaussian data set, the DDPM
posterior variance computed from the betas in float64, and alpha-bar as a
cumulative product written out here.
"""

from __future__ import annotations

import math

import pytest
import torch

import gentool
from gentool import Diffusion
from gentool.testing import denoise_from_eps
from _tiny import solver_samplers


def linear_betas(T: int) -> torch.Tensor:
    return torch.linspace(1e-4, 0.02, T, dtype=torch.float64)


#: the reverse-process solvers that run on the discrete chain (``midpoint`` needs a process's derivatives:
#: test_flow.py; ``consistency`` samples consistency models only: tests/distill)
SAMPLERS = solver_samplers(Diffusion(linear_betas(10)))
#: network evaluations for the two-point test; samplers not named get FAST_STEPS
TWO_POINT_STEPS = {"ancestral": None}  # ancestral: every step of T
FAST_STEPS = 20
#: samplers with two network evaluations per step (at t, then at the next timestep; one on the last step)
TWO_EVALS_PER_STEP = {"heun"}
M = 0.5  # the two data points are -M and +M in every pixel


def alphas_cumprod(T: int) -> list[float]:
    """abar_t = prod_{s<=t} (1 - beta_s), written out independently of Diffusion."""
    out, prod = [], 1.0
    for b in linear_betas(T).tolist():
        prod *= 1.0 - b
        out.append(prod)
    return out


def scaled_linear(T: int) -> torch.Tensor:
    """Ho et al.'s linear schedule rescaled to T steps (beta_T * T stays 20)."""
    return torch.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T, dtype=torch.float64)


def sampler(name: str):
    """The registered sampler, called with a noise prediction ``eps_fn`` in place of ``denoise`` (converted as the
    ``eps`` parameterisation does: :func:`gentool.testing.denoise_from_eps`)."""
    factory = gentool.registry().get("sampler", name).factory

    def call(eps_fn, process, x_T, **kwargs):
        return factory(denoise_from_eps(eps_fn, process), process, x_T, **kwargs)

    return call


def two_point_eps(diffusion: Diffusion):
    """The optimal eps for x0 = +-M in every pixel, equally likely.

    log p(+M | x_t) / p(-M | x_t) = 2 sqrt(abar) M sum(x_t) / (1 - abar), so
    E[x0 | x_t] = M tanh(sqrt(abar) M sum(x_t) / (1 - abar)) and
    eps* = (x_t - sqrt(abar) E[x0 | x_t]) / sqrt(1 - abar).
    """
    abar = diffusion.alphas_cumprod_64

    def eps_fn(x, t):
        a = abar[t].reshape(-1, 1, 1, 1)
        x64 = x.double()
        logit = a.sqrt() * M * x64.sum(dim=(1, 2, 3), keepdim=True) / (1 - a)
        x0 = M * torch.tanh(logit)
        return ((x64 - a.sqrt() * x0) / (1 - a).sqrt()).to(x.dtype)

    return eps_fn


def gaussian_eps(diffusion: Diffusion, mu: float, s: float):
    """The optimal eps for x0 ~ N(mu, s^2): E[x0 | x_t] is linear in x_t."""
    abar = diffusion.alphas_cumprod_64

    def eps_fn(x, t):
        a = abar[t].reshape(-1, 1, 1, 1)
        x64 = x.double()
        x0 = mu + a.sqrt() * s**2 / (a * s**2 + 1 - a) * (x64 - a.sqrt() * mu)
        return ((x64 - a.sqrt() * x0) / (1 - a).sqrt()).to(x.dtype)

    return eps_fn


# -- the contract every sampler keeps ----------------------------------------

@pytest.mark.parametrize("name", SAMPLERS)
def test_visits_the_respaced_timesteps_and_honours_t_start(name):
    diffusion = Diffusion(scaled_linear(100))
    seen_t, seen = [], []
    fn = sampler(name)

    def eps_fn(x, t):
        seen_t.append(int(t[0]))
        return torch.zeros_like(x)

    x = fn(eps_fn, diffusion, torch.randn(2, 1, 4, 4), steps=7, t_start=60,
           generator=torch.Generator().manual_seed(0), callback=lambda info: seen.append(dict(info)))
    visited = [s["t"] for s in seen]
    # one network evaluation per step (Heun: two), as many steps as Diffusion.timesteps says (progress bars
    # count on it), strictly decreasing from t_start to 0; each step ends where the next one starts
    if name in TWO_EVALS_PER_STEP:
        assert seen_t == [u for t, s in zip(visited, visited[1:] + [-1]) for u in ([t, s] if s >= 0 else [t])]
    else:
        assert seen_t == visited
    assert len(visited) == len(diffusion.timesteps(7, 60)) == 7
    assert visited[0] == 60 and visited[-1] == 0 and all(a > b for a, b in zip(visited, visited[1:]))
    assert [s["t_next"] for s in seen] == visited[1:] + [-1]
    assert [s["i"] for s in seen] == list(range(7))
    assert x.shape == (2, 1, 4, 4) and torch.isfinite(x).all()


@pytest.mark.parametrize("name,options", [("ancestral", {}), ("ddim", {}), ("dpmpp_2m", {"spacing": "uniform"})])
def test_time_uniform_samplers_use_the_diffusion_subsequence(name, options):
    diffusion = Diffusion(scaled_linear(100))
    seen = []
    sampler(name)(lambda x, t: torch.zeros_like(x), diffusion, torch.randn(1, 1, 2, 2), steps=9, t_start=77,
                  callback=lambda info: seen.append(info["t"]), **options)
    assert seen == diffusion.timesteps(9, 77) == [round(77 - 77 * k / 8) for k in range(9)]


@pytest.mark.parametrize("name", SAMPLERS)
def test_generator_is_the_only_randomness(name):
    diffusion = Diffusion(scaled_linear(50))
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    eps_fn = two_point_eps(diffusion)
    torch.manual_seed(123)
    a = sampler(name)(eps_fn, diffusion, x_T, steps=10, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(456)  # the global RNG must not matter
    b = sampler(name)(eps_fn, diffusion, x_T, steps=10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", SAMPLERS)
def test_callback_replacement_is_used(name):
    diffusion = Diffusion(scaled_linear(50))
    inputs, visited = {}, []

    def eps_fn(x, t):
        inputs.setdefault(int(t[0]), []).append(x.clone())
        return torch.zeros_like(x)

    def callback(info):
        visited.append(info["t"])
        return marker.clone() if info["i"] == 1 else None

    marker = torch.full((1, 1, 2, 2), 0.123)
    sampler(name)(eps_fn, diffusion, torch.randn(1, 1, 2, 2), steps=5,
                  generator=torch.Generator().manual_seed(0), callback=callback)
    assert torch.equal(inputs[visited[2]][-1], marker)  # the step after the callback starts from its tensor


# -- the two-point data set: its optimal denoiser is known exactly -------------

@pytest.mark.parametrize("name", SAMPLERS)
def test_two_point_data_lands_on_the_points_with_equal_mass(name):
    T, n = 100, 512
    diffusion = Diffusion(scaled_linear(T))
    abar = alphas_cumprod_scaled(T)
    steps = TWO_POINT_STEPS.get(name, FAST_STEPS)
    states = []

    def record(info):
        if info["t_next"] >= 0:
            states.append((info["t_next"], info["x"].double().clone()))

    x_T = torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x = sampler(name)(two_point_eps(diffusion), diffusion, x_T, steps=steps,
                      generator=torch.Generator().manual_seed(1), callback=record)
    sign = torch.sign(x.mean(dim=(1, 2, 3)))
    assert (x - M * sign[:, None, None, None]).abs().max() < 0.05
    assert 0.42 < float((sign > 0).double().mean()) < 0.58
    # The intermediate states must follow q(x_t) = 1/2 N(-sqrt(abar) M, (1-abar) I) + 1/2 N(+...):
    # per pixel E[x^2] = abar M^2 + 1 - abar; within an image the spread is the noise, 1 - abar.
    for t, xs in states[len(states) // 4 :: max(1, len(states) // 6)]:
        a = abar[t]
        second_moment = float(xs.square().mean())
        spread = float(xs.var(dim=(1, 2, 3)).mean())
        assert second_moment == pytest.approx(a * M**2 + 1 - a, rel=0.1), (name, t)
        assert spread == pytest.approx(1 - a, rel=0.15, abs=2e-4), (name, t)


def alphas_cumprod_scaled(T: int) -> list[float]:
    out, prod = [], 1.0
    for b in scaled_linear(T).tolist():
        prod *= 1.0 - b
        out.append(prod)
    return out


# -- DDIM -------------------------------------------------------------------

def test_ddim_eta1_all_steps_has_the_ddpm_posterior_variance():
    T, n = 100, 8192
    diffusion = Diffusion(scaled_linear(T))
    betas = scaled_linear(T)
    abar = alphas_cumprod_scaled(T)
    # beta-tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (Ho et al. eq. 7), abar_{-1} = 1
    beta_tilde = [betas[t].item() * (1 - (abar[t - 1] if t else 1.0)) / (1 - abar[t]) for t in range(T)]
    variances = {}

    def reset(info):
        # every sample restarts from the same x, so the spread across the batch is the step's noise
        variances[info["t"]] = float(info["x"].double().var())
        return torch.zeros_like(info["x"])

    sampler("ddim")(lambda x, t: torch.zeros_like(x), diffusion, torch.zeros(n, 1, 1, 1), eta=1.0,
                    clip_denoised=False, generator=torch.Generator().manual_seed(0), callback=reset)
    for t in range(1, T):
        assert variances[t] == pytest.approx(beta_tilde[t], rel=0.1), t
    assert variances[0] == 0.0  # the last step adds no noise


def test_ddim_eta1_all_steps_is_ancestral_sampling_with_beta_tilde():
    diffusion = Diffusion(scaled_linear(100))
    eps_fn = two_point_eps(diffusion)
    x_T = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    traj = {}
    for name, opts in (("ddim", {"eta": 1.0}), ("ancestral", {"variance": "beta_tilde"})):
        traj[name] = []
        sampler(name)(eps_fn, diffusion, x_T, generator=torch.Generator().manual_seed(3),
                      callback=lambda info, k=name: traj[k].append(info["x"].clone()), **opts)
    for a, b in zip(traj["ddim"], traj["ancestral"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_ddim_eta0_is_deterministic_for_a_fixed_start():
    diffusion = Diffusion(scaled_linear(100))
    eps_fn = two_point_eps(diffusion)
    x_T = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a = sampler("ddim")(eps_fn, diffusion, x_T, steps=25, eta=0.0, generator=torch.Generator().manual_seed(1))
    b = sampler("ddim")(eps_fn, diffusion, x_T, steps=25, eta=0.0, generator=torch.Generator().manual_seed(2))
    c = sampler("ddim")(eps_fn, diffusion, x_T, steps=25, eta=0.0, generator=None)
    assert torch.equal(a, b) and torch.equal(a, c)
    d = sampler("ddim")(eps_fn, diffusion, x_T, steps=25, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, d)


@pytest.mark.parametrize("name,options", [("ddim", {}), ("dpmpp_2m", {}), ("dpmpp_2m", {"spacing": "uniform"})])
@pytest.mark.parametrize("steps,t_start", [(7, None), (13, 599), (3, 998), (50, 49)])
def test_each_step_goes_to_the_previous_timestep_of_the_subsequence(name, options, steps, t_start):
    # With eps_fn = c constant and x_T = sqrt(abar_T) x0* + sqrt(1 - abar_T) c, the exact
    # deterministic solution is x_s = sqrt(abar_s) x0* + sqrt(1 - abar_s) c at every visited s.
    T = 1000
    diffusion = Diffusion(linear_betas(T))
    abar = alphas_cumprod(T)
    g = torch.Generator().manual_seed(0)
    x0_star, c = 0.8 * torch.rand(2, 1, 3, 3, generator=g) - 0.4, torch.randn(2, 1, 3, 3, generator=g)
    t0 = T - 1 if t_start is None else t_start
    x_T = abar[t0] ** 0.5 * x0_star + (1 - abar[t0]) ** 0.5 * c
    seen = []
    fn = sampler(name)
    x = fn(lambda x, t: c.clone(), diffusion, x_T, steps=steps, t_start=t_start, clip_denoised=False, **options,
           callback=lambda info: seen.append((info["t_next"], info["x"].clone())))
    assert len(seen) == min(steps, t0 + 1)
    for s, xs in seen[:-1]:
        torch.testing.assert_close(xs, abar[s] ** 0.5 * x0_star + (1 - abar[s]) ** 0.5 * c, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x, x0_star, rtol=1e-4, atol=1e-4)


# -- the probability-flow ODE of Gaussian data has a closed-form solution ------

def ode_error(name: str, steps: int, diffusion: Diffusion, x_T: torch.Tensor, mu: float, s: float) -> float:
    # The PF-ODE maps the marginal N(sqrt(abar) mu, abar s^2 + 1 - abar) affinely onto N(mu, s^2):
    a_T = float(diffusion.alphas_cumprod_64[-1])
    exact = mu + s * (x_T.double() - a_T**0.5 * mu) / (a_T * s**2 + 1 - a_T) ** 0.5
    x = sampler(name)(gaussian_eps(diffusion, mu, s), diffusion, x_T, steps=steps, clip_denoised=False)
    return float((x.double() - exact).abs().max())


def test_dpmpp_2m_is_second_order_and_beats_ddim():
    diffusion = Diffusion(linear_betas(1000))
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    mu, s = 0.2, 0.3
    e_ddim = ode_error("ddim", 20, diffusion, x_T, mu, s)
    e10, e20, e40 = (ode_error("dpmpp_2m", n, diffusion, x_T, mu, s) for n in (10, 20, 40))
    assert e20 < e_ddim / 4
    assert e40 < 0.01
    assert math.log2(e20 / e40) > 1.5, (e10, e20, e40)


def test_dpmpp_2m_with_all_steps_matches_the_closed_form():
    diffusion = Diffusion(scaled_linear(200))
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    assert ode_error("dpmpp_2m", None, diffusion, x_T, 0.2, 0.3) < 2e-3


def test_ddim_rejects_negative_eta():
    diffusion = Diffusion(scaled_linear(50))
    with pytest.raises(ValueError, match="eta"):
        sampler("ddim")(lambda x, t: x, diffusion, torch.zeros(1, 1, 2, 2), eta=-0.5)
