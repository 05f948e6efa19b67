"""Karras et al. (2022) sigmas, the euler and heun samplers, and the log-SNR spacing of DPM-Solver++.

The reference is the probability-flow ODE of Gaussian data N(MU, S^2) per
pixel, whose solution is known in closed form: the ODE maps the marginal
N(sqrt(abar) MU, abar S^2 + 1 - abar) affinely onto N(MU, S^2). The spacings
are re-derived here from the papers' formulas and alpha-bar written out as a
cumulative product.
"""

from __future__ import annotations

import math

import pytest
import torch

from gentool.plugins import registry
from gentool import Diffusion
from gentool.reverse import spaced_timesteps
from gentool.testing import denoise_from_eps
from _tiny import gaussian_eps as exact_gaussian_eps

MU, S = 0.2, 0.3


def sampler(name: str):
    """The registered sampler, called with a noise prediction in place of ``denoise`` (see test_samplers.py)."""
    factory = registry().get("sampler", name).factory

    def call(eps_fn, process, x_T, **kwargs):
        return factory(denoise_from_eps(eps_fn, process), process, x_T, **kwargs)

    return call


def linear_betas(T: int = 1000) -> torch.Tensor:
    return torch.linspace(1e-4, 0.02, T, dtype=torch.float64)


def cumprod(betas: torch.Tensor) -> list[float]:
    out, prod = [], 1.0
    for b in betas.tolist():
        prod *= 1.0 - b
        out.append(prod)
    return out


def gaussian_eps(diffusion: Diffusion):
    """The exact noise prediction for x0 ~ N(MU, S^2) (tests/_tiny.py)."""
    return exact_gaussian_eps(diffusion, MU, S)


def ode_error(name: str, steps: int, diffusion: Diffusion, **options) -> float:
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a_T = float(diffusion.alphas_cumprod_64[-1])
    exact = MU + S * (x_T - a_T**0.5 * MU) / (a_T * S**2 + 1 - a_T) ** 0.5
    x = sampler(name)(gaussian_eps(diffusion), diffusion, x_T, steps=steps, **options)
    return float((x - exact).abs().max())


# -- order of accuracy --------------------------------------------------------

@pytest.mark.parametrize("spacing", ["karras", "uniform"])
def test_halving_the_step_cuts_heun_s_error_by_4_and_euler_s_by_2(spacing):
    diffusion = Diffusion(linear_betas())
    heun = [ode_error("heun", n, diffusion, spacing=spacing) for n in (10, 20, 40)]
    euler = [ode_error("euler", n, diffusion, spacing=spacing) for n in (10, 20, 40)]
    for coarse, fine in zip(heun, heun[1:]):
        assert 3.2 < coarse / fine < 6.5, heun  # second order: 2^2
    for coarse, fine in zip(euler, euler[1:]):
        assert 1.7 < coarse / fine < 2.4, euler  # first order: 2^1
    assert heun[-1] < 0.015 and heun[-1] < euler[-1] / 5


def test_euler_in_sigma_is_deterministic_ddim():
    # Karras et al. 2022, sec. 3 / Song et al. 2020, eq. 14: DDIM (eta = 0) is Euler's method in sigma
    diffusion = Diffusion(linear_betas())
    x_T = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for spacing in ("karras", "uniform"):
        a = sampler("euler")(gaussian_eps(diffusion), diffusion, x_T, steps=12, spacing=spacing)
        b = sampler("ddim")(gaussian_eps(diffusion), diffusion, x_T, steps=12, spacing=spacing, clip_denoised=False)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,steps,churn", [("heun", 40, 40.0), ("euler", 400, 10.0)])
def test_churn_samples_the_data_distribution(name, steps, churn):
    # Algorithm 2 with S_churn > 0 adds noise and then removes more: the samples still have the data's
    # moments (Euler's first-order error grows with the churn, so it needs more steps)
    diffusion = Diffusion(linear_betas())
    x_T = torch.randn(1024, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    x = sampler(name)(gaussian_eps(diffusion), diffusion, x_T, steps=steps, s_churn=churn, s_tmin=0.05,
                      s_tmax=50.0, generator=torch.Generator().manual_seed(1))
    plain = sampler(name)(gaussian_eps(diffusion), diffusion, x_T, steps=steps)
    assert not torch.allclose(x, plain)  # the churn changed the path
    assert float(x.mean()) == pytest.approx(MU, abs=0.01)
    assert float(x.std()) == pytest.approx(S, rel=0.05)


# -- spacings -------------------------------------------------------------------

def test_karras_spacing_is_eq_5_snapped_to_the_nearest_timestep():
    T, n, rho = 1000, 10, 7.0
    abar = cumprod(linear_betas(T))
    sigma = [math.sqrt((1 - a) / a) for a in abar]
    s_max, s_min = sigma[-1], sigma[0]
    expected = []
    for i in range(n):  # eq. 5
        s_i = (s_max ** (1 / rho) + i / (n - 1) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        expected.append(min(range(T), key=lambda t: abs(math.log(sigma[t]) - math.log(s_i))))
    assert spaced_timesteps(Diffusion(linear_betas(T)), n, None, "karras") == expected
    assert expected[0] == T - 1 and expected[-1] == 0


def test_trailing_spacing_is_lin_et_al_table_2():
    # round(T - k T / n) - 1 in 0-based steps: 999, 899, ..., 99 for T = 1000 and n = 10
    assert spaced_timesteps(Diffusion(linear_betas()), 10, None, "trailing") == list(range(999, 0, -100))


def test_an_unknown_spacing_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="uniform, trailing, logsnr, karras"):
        spaced_timesteps(Diffusion(linear_betas(10)), 5, None, "even")


# -- DPM-Solver++ on the cosine schedule ------------------------------------------

def cosine_betas(T: int = 1000, s: float = 0.008) -> torch.Tensor:
    """Nichol and Dhariwal (2021), eq. 17, with the last beta clipped at 0.999."""
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    return torch.tensor([min(1 - f[t + 1] / f[t], 0.999) for t in range(T)], dtype=torch.float64)


def test_dpmpp_2m_logsnr_steps_spread_out_on_the_cosine_schedule_and_the_error_drops():
    diffusion = Diffusion(cosine_betas())
    unclipped = spaced_timesteps(diffusion, 20, None, "logsnr", lambda_min=-math.inf)
    clipped = spaced_timesteps(diffusion, 20, None, "logsnr")
    assert sum(t >= 991 for t in unclipped) == 8  # the clipped last beta makes lambda_{T-1} an outlier
    assert sum(t >= 991 for t in clipped) <= 2
    before = ode_error("dpmpp_2m", 20, diffusion, clip_denoised=False, lambda_min=-math.inf)
    after = ode_error("dpmpp_2m", 20, diffusion, clip_denoised=False)
    assert after < 0.6 * before, (before, after)


def test_a_smooth_schedule_ending_below_the_clip_keeps_its_whole_range():
    # linear betas up to 0.04: lambda_{T-1} is about -6.4, below -5.1, but no outlier (equal gaps)
    diffusion = Diffusion(torch.linspace(1e-4, 0.04, 1000, dtype=torch.float64))
    lam = 0.5 * torch.log(diffusion.alphas_cumprod_64 / (1 - diffusion.alphas_cumprod_64))
    assert float(lam[-1]) < -5.1
    assert spaced_timesteps(diffusion, 20, None, "logsnr") == spaced_timesteps(diffusion, 20, None, "logsnr",
                                                                                 lambda_min=-math.inf)


def test_the_lambda_clip_leaves_the_linear_schedule_alone():
    diffusion = Diffusion(linear_betas())  # lambda_{T-1} = -5.06 > -5.1
    assert spaced_timesteps(diffusion, 20, None, "logsnr") == spaced_timesteps(diffusion, 20, None, "logsnr",
                                                                                 lambda_min=-math.inf)
