"""EDM and VE (plugins/gentool_edm) against the EDM paper's equations, written out here (float64).

Karras et al. (2022): eq. 5 (the sigma grid), Table 1 (c_skip, c_out, c_in,
c_noise, lambda(sigma), ln(sigma) ~ N(P_mean, P_std^2)), Algorithm 2 (the
stochastic second-order sampler); Song et al. (2021) for the VE process.
"""

from __future__ import annotations

import math

import pytest
import torch

import gentool
from gentool import Denoised
from gentool.testing import DATA_STD, gaussian_denoise_fn

pytestmark = pytest.mark.usefixtures("one_thread")


def factory(kind: str, name: str):
    return gentool.registry().get(kind, name).factory


def edm(**options):
    return factory("process", "edm")(**options)


def ve(**options):
    return factory("process", "ve")(**options)


def eq5(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> list[float]:
    """Karras et al. (2022), eq. 5 for i < N, then t_N = 0."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (n - 1) * (b - a)) ** rho for i in range(n)] + [0.0]


def table1(sigma: float, sigma_data: float = 0.5) -> dict[str, float]:
    """Karras et al. (2022), Table 1, the EDM column."""
    return {"c_skip": sigma_data**2 / (sigma**2 + sigma_data**2),
            "c_out": sigma * sigma_data / math.sqrt(sigma_data**2 + sigma**2),
            "c_in": 1 / math.sqrt(sigma**2 + sigma_data**2),
            "c_noise": math.log(sigma) / 4,
            "weight": (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2}


# -- the processes ---------------------------------------------------------------

def test_edm_s_karras_grid_is_eq_5_and_the_process_is_sigma_itself():
    p = edm()
    assert p.grid(18, None, "karras") == pytest.approx(eq5(18)[:-1], rel=1e-14)
    assert p.grid(18, None, "karras")[0] == 80.0 and p.prior_std == 80.0
    assert edm(rho=3.0).grid(10, None, "karras") == pytest.approx(eq5(10, rho=3.0)[:-1], rel=1e-14)
    for t in (0.01, 1.0, 40.0):
        assert p.alpha(t) == 1.0 and p.sigma(t) == t
        assert p.t_of_log_snr(-2 * math.log(t)) == pytest.approx(t, rel=1e-14)
    assert p.t_of_log_snr(-2 * math.log(120.0)) == pytest.approx(120.0)  # Algorithm 2 may churn above t_0
    # the network's noise label: log sigma from sigma_min (0) to sigma_max (1000), ve's 1000 t at equal sigma
    labels = p.noise_label(torch.tensor([0.002, math.sqrt(0.002 * 80), 80.0]))
    torch.testing.assert_close(labels, torch.tensor([0.0, 500.0, 1000.0]), rtol=0, atol=1e-3)
    assert p.time_at(0.0) == 0.0 and p.time_at(1.0) == pytest.approx(80.0)


def test_ve_is_song_et_al_s_geometric_sigma():
    p = ve(sigma_min=0.01, sigma_max=50.0)
    for t in (1e-3, 0.25, 0.5, 1.0):
        assert float(p.sigma(t)) == pytest.approx(0.01 * (50 / 0.01) ** t, rel=1e-13)
        assert float(p.alpha(t)) == 1.0
        assert p.t_of_log_snr(-2 * math.log(0.01 * (50 / 0.01) ** t)) == pytest.approx(t, rel=1e-12)
        h = 1e-7
        assert p.derivatives(t)[1] == pytest.approx((p.sigma(t + h) - p.sigma(t - h)) / (2 * h), rel=1e-6)
    assert float(p.sigma(0.0)) == 0.0 and p.prior_std == 50.0
    karras = p.grid(10, None, "karras")
    sigmas = [float(p.sigma(t)) for t in karras]
    assert sigmas[:-1] == pytest.approx(eq5(10, 0.01, 50.0)[:-2], rel=1e-9)  # Karras' grid lands on VE's sigma too
    assert karras[-1] == 1e-5  # sigma_min itself is t -> 0: the lowest time visited is Song et al.'s 1e-5


@pytest.mark.parametrize("options, message", [({"sigma_min": 1.0, "sigma_max": 0.5}, "below sigma_max"),
                                              ({"rho": 0}, "rho must be"), ({"sigma_min": -1.0}, "sigma_min")])
def test_bad_process_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        edm(**options)


# -- the preconditioning and the loss ---------------------------------------------

def test_preconditioning_is_table_1():
    from gentool_edm.precond import EDMPrecond

    p, param = edm(), EDMPrecond(0.5)
    sigmas = [0.002, 0.3, 1.0, 7.5, 80.0]
    t = torch.tensor(sigmas, dtype=torch.float64)
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_in, c_noise = param.inputs(p, x, t)
    f = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = param.denoised(p, x, t, f)
    for i, s in enumerate(sigmas):
        c = table1(s)
        torch.testing.assert_close(x_in[i], c["c_in"] * x[i], rtol=1e-12, atol=1e-12)
        assert float(c_noise[i]) == pytest.approx(c["c_noise"], rel=1e-6)
        torch.testing.assert_close(d.x0[i], c["c_skip"] * x[i] + c["c_out"] * f[i], rtol=1e-12, atol=1e-12)  # eq. 7
        torch.testing.assert_close(d.eps[i], (x[i] - d.x0[i]) / s, rtol=1e-12, atol=1e-12)
    # eq. 8: the effective target F* makes D exact
    x0, eps = torch.randn_like(x), torch.randn_like(x)
    x_t = x0 + t.reshape(-1, 1, 1, 1) * eps
    target = param.target(p, x0, eps, t)
    for i, s in enumerate(sigmas):
        c = table1(s)
        torch.testing.assert_close(target[i], (x0[i] - c["c_skip"] * x_t[i]) / c["c_out"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(param.denoised(p, x_t, t, target).x0, x0, rtol=1e-10, atol=1e-10)


def test_the_loss_is_lambda_sigma_times_the_error_of_d():
    objective = factory("objective", "edm")(p_mean=-1.2, p_std=1.2, sigma_data=0.5)
    p = edm()
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(6, 1, 3, 3, generator=g, dtype=torch.float64)
    t, noise = objective.draw(p, x0, g)
    noise = noise.double()
    seen = {}

    def net(x_in, tt, labels):  # a fixed "network" F of its input
        seen["x_in"] = x_in
        return 0.1 * x_in + 0.2

    from gentool import call_network

    model = lambda x_in, c_noise, labels: net(x_in, c_noise, labels)  # noqa: E731
    per, _ = objective.loss(call_network(model, p, objective.parameterisation), p, x0, None, t, noise)
    for i in range(6):
        s = float(t[i])
        c = table1(s)
        x_t = x0[i] + s * noise[i]
        d = c["c_skip"] * x_t + c["c_out"] * (0.1 * c["c_in"] * x_t + 0.2)
        want = c["weight"] * float((d - x0[i]).square().mean())
        assert float(per[i]) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("process", [edm(), ve()], ids=["edm", "ve"])
def test_sigma_is_log_normal_with_p_mean_and_p_std_on_every_alpha_one_process(process):
    objective = factory("objective", "edm")(p_mean=-1.2, p_std=1.2)
    n = 4000
    t, _ = objective.draw(process, torch.zeros(n, 1), torch.Generator().manual_seed(3))
    z = torch.randn((n,), generator=torch.Generator().manual_seed(3), dtype=torch.float64)  # the same draws
    sigma = torch.exp(-1.2 + 1.2 * z)
    lo, hi = float(process.sigma(process.t_of_log_snr(1e9))), float(process.sigma(process.t_max))
    got = process.sigma(t.double())
    torch.testing.assert_close(got, sigma.clamp(lo, hi), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["flow", "vp"])
def test_edm_refuses_processes_whose_alpha_is_not_1(name):
    from gentool.testing import reference_diffusion

    process = reference_diffusion() if name == "vp" else factory("process", "flow")()
    objective = factory("objective", "edm")()
    for why in (objective.check(process), objective.parameterisation.check(process)):
        assert why and "alpha = 1" in why and "edm" in why


# -- Algorithm 2 -----------------------------------------------------------------

def algorithm2(D, x, t_steps, s_churn, s_tmin, s_tmax, s_noise, generator):
    """Karras et al. (2022), Algorithm 2, line by line (eps drawn where gamma > 0: the rest is never used)."""
    n = len(t_steps) - 1
    for i in range(n):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t_cur <= s_tmax else 0.0
        t_hat = t_cur + gamma * t_cur
        x_hat = x
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype) * s_noise
            x_hat = x + math.sqrt(t_hat**2 - t_cur**2) * eps
        d = (x_hat - D(x_hat, t_hat)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d
        if t_next != 0:
            d_prime = (x_next - D(x_next, t_next)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d + 0.5 * d_prime)
        x = x_next
    return x


def exact_d(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(x; sigma) for data N(0, DATA_STD^2): DATA_STD^2 x / (DATA_STD^2 + sigma^2)."""
    return DATA_STD**2 * x / (DATA_STD**2 + sigma**2)


@pytest.mark.parametrize("churn", [
    dict(s_churn=0.0),
    dict(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003),  # the paper's ImageNet setting
    dict(s_churn=80.0, s_noise=1.007),  # every step, from t_0 = sigma_max up
])
def test_heun_on_edm_is_algorithm_2(churn):
    p = edm()
    x_T = torch.randn(8, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    full = dict(s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0) | churn
    want = algorithm2(exact_d, x_T, eq5(18), generator=torch.Generator().manual_seed(1), **full)
    got = factory("sampler", "heun")(gaussian_denoise_fn(p), p, x_T, steps=18, generator=torch.Generator().manual_seed(1),
                                     spacing="karras", **churn)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


# -- k-diffusion's sampling functions, written out ----------------------------------

def kd_ancestral_step(sigma_from, sigma_to, eta):
    """k_diffusion.sampling.get_ancestral_step."""
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - up**2) ** 0.5, up


def kd_euler_ancestral(model, x, sigmas, eta, s_noise, noise):
    """k_diffusion.sampling.sample_euler_ancestral (noise_sampler = ``noise``)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        down, up = kd_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = (x - denoised) / sigmas[i]
        x = x + d * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise() * s_noise * up
    return x


def kd_dpmpp_2m_sde(model, x, sigmas, eta, s_noise, noise):
    """k_diffusion.sampling.sample_dpmpp_2m_sde, solver_type = "midpoint" (noise_sampler = ``noise``)."""
    old, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * math.exp(-eta_h) * x + -math.expm1(-h - eta_h) * denoised
            if old is not None:
                r = h_last / h
                x = x + 0.5 * -math.expm1(-h - eta_h) * (1 / r) * (denoised - old)
            if eta:
                x = x + noise() * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
        old, h_last = denoised, h if sigmas[i + 1] != 0 else h_last
    return x


def randn_from(generator, shape):
    return lambda: torch.randn(shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("name, reference, options", [
    ("euler_ancestral", kd_euler_ancestral, dict(eta=1.0, s_noise=1.0)),
    ("euler_ancestral", kd_euler_ancestral, dict(eta=0.5, s_noise=1.01)),
    ("dpmpp_2m_sde", kd_dpmpp_2m_sde, dict(eta=1.0, s_noise=1.0)),
    ("dpmpp_2m_sde", kd_dpmpp_2m_sde, dict(eta=0.0, s_noise=1.0)),
    ("dpmpp_2m_sde", kd_dpmpp_2m_sde, dict(eta=0.7, s_noise=0.9)),
])
def test_stochastic_samplers_are_k_diffusion_s_on_the_edm_process(name, reference, options):
    p = edm()
    x_T = torch.randn(8, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    want = reference(exact_d, x_T, eq5(15), noise=randn_from(torch.Generator().manual_seed(1), x_T.shape), **options)
    got = factory("sampler", name)(gaussian_denoise_fn(p), p, x_T, steps=15,
                                   generator=torch.Generator().manual_seed(1), **options)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name, reference", [("euler_ancestral", kd_euler_ancestral),
                                             ("dpmpp_2m_sde", kd_dpmpp_2m_sde)])
@pytest.mark.parametrize("process_name, t_start", [("vp", None), ("flow", 0.9)])
def test_stochastic_samplers_on_vp_and_flow_are_k_diffusion_s_in_y_space(name, reference, process_name, t_start):
    # with alpha != 1 the same steps run on y = x / alpha at Karras' sigma = sigma / alpha (k-diffusion's
    # DiscreteSchedule wrappers of VP models); the data's denoiser of y at that sigma is exact_d
    from gentool.testing import reference_diffusion

    process = reference_diffusion() if process_name == "vp" else factory("process", "flow")()

    def scales(t) -> tuple[float, float]:  # alpha, sigma in float64 (the chain's from its alpha-bars)
        if process_name == "vp":
            abar = float(process.alphas_cumprod_64[int(t)]) if int(t) >= 0 else 1.0
            return math.sqrt(abar), math.sqrt(1 - abar)
        return 1 - float(t), float(t)

    def denoise(x, t):  # the exact denoiser, through y = x / alpha at Karras' sigma
        a, s = scales(t)
        x0 = exact_d(x / a, s / a)
        return Denoised(x0, (x - a * x0) / s)

    ts = process.grid(12, t_start, "karras")
    alphas = [scales(t)[0] for t in ts]
    sigmas = [scales(t)[1] / a for t, a in zip(ts, alphas)] + [0.0]
    x_T = torch.randn(8, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = reference(exact_d, x_T / alphas[0], sigmas, eta=1.0, s_noise=1.0,
                     noise=randn_from(torch.Generator().manual_seed(1), x_T.shape))
    got = factory("sampler", name)(denoise, process, x_T, steps=12, t_start=t_start,
                                   generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def kd_euler(model, x, sigmas):
    for i in range(len(sigmas) - 1):
        x = x + (x - model(x, sigmas[i])) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def kd_dpmpp_2m(model, x, sigmas):
    """k_diffusion.sampling.sample_dpmpp_2m."""
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        t, t_next = -math.log(sigmas[i]), (-math.log(sigmas[i + 1]) if sigmas[i + 1] > 0 else math.inf)
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * denoised
        else:
            r = (t - -math.log(sigmas[i - 1])) / h
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * ((1 + 1 / (2 * r)) * denoised
                                                                          - (1 / (2 * r)) * old)
        old = denoised
    return x


@pytest.mark.parametrize("name, reference, options", [
    ("euler", kd_euler, {}),
    ("ddim", kd_euler, {"clip_denoised": False}),  # DDIM (eta = 0) is Euler in sigma (Karras et al., sec. 3)
    ("dpmpp_2m", kd_dpmpp_2m, {"clip_denoised": False}),
])
def test_deterministic_samplers_on_the_edm_process_are_k_diffusion_s(name, reference, options):
    # cross-family: samplers written for VP (ddim, DPM-Solver++) on EDM's process and grid
    p = edm()
    x_T = torch.randn(8, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    want = reference(exact_d, x_T, eq5(15))
    got = factory("sampler", name)(gaussian_denoise_fn(p), p, x_T, steps=15, spacing="karras", **options)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_an_edm_model_sampled_by_ddim_and_dpmpp_2m_reaches_the_ode_s_solution():
    # the model's output goes through EDM's preconditioning: F* of the exact D (eq. 8), then D = c_skip x + c_out F*
    from gentool_edm.precond import EDMPrecond

    p, param = edm(), EDMPrecond(0.5)

    def denoise(x, t):
        c = table1(float(t))
        f = (exact_d(x, float(t)) - c["c_skip"] * x) / c["c_out"]
        return param.denoised(p, x, t, f)

    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    exact = x_T * DATA_STD / math.sqrt(DATA_STD**2 + 80.0**2)
    for name, steps, tol in (("ddim", 400, 0.015), ("dpmpp_2m", 80, 5e-3), ("heun", 100, 5e-3)):  # ddim: 1st order
        x = factory("sampler", name)(denoise, p, x_T, steps=steps, spacing="karras",
                                     **({} if name == "heun" else {"clip_denoised": False}))
        assert float((x - exact).abs().max()) < tol, name
    assert isinstance(denoise(x_T, 80.0), Denoised)


# -- k-diffusion itself, where it is installed -----------------------------------------

@pytest.fixture(scope="module")
def k_sampling():
    """k_diffusion.sampling, loaded without its package's imports (clip, kornia, ...): its own scipy, torchdiffeq
    and torchsde imports stubbed when missing (the functions compared here use none of them). Skipped when
    k-diffusion is not installed (it is no test dependency: pip install k-diffusion --no-deps)."""
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed")
    stubs = {"scipy": {"integrate": None}, "torchdiffeq": {"odeint": None}, "torchsde": {"BrownianTree": None}}
    stubbed = [name for name in stubs if importlib.util.find_spec(name) is None]
    try:
        for name in stubbed:
            sys.modules[name] = types.SimpleNamespace(**stubs[name])
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = package
        yield importlib.import_module("k_diffusion.sampling")
    finally:
        for name in [*stubbed, *(m for m in list(sys.modules) if m.split(".")[0] == "k_diffusion")]:
            sys.modules.pop(name, None)


@pytest.mark.parametrize("name, function, options", [
    ("euler_ancestral", "sample_euler_ancestral", dict(eta=1.0, s_noise=1.0)),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", dict(eta=1.0, s_noise=1.0)),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", dict(eta=0.6, s_noise=1.02)),
    ("euler", "sample_euler", {}),
    ("heun", "sample_heun", {}),
    ("dpmpp_2m", "sample_dpmpp_2m", {"clip_denoised": False, "spacing": "karras"}),
])
def test_samplers_match_k_diffusion_s_functions_on_identical_inputs(k_sampling, name, function, options):
    p = edm()
    x_T = torch.randn(8, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    sigmas = k_sampling.get_sigmas_karras(15, 0.002, 80.0, rho=7.0).double()
    torch.testing.assert_close(sigmas[:-1], torch.tensor(p.grid(15, None, "karras"), dtype=torch.float64),
                               rtol=1e-6, atol=0)  # k-diffusion builds them in float32
    sigmas = torch.tensor(eq5(15), dtype=torch.float64)  # the same grid in float64
    kwargs = {k: v for k, v in options.items() if k not in ("clip_denoised", "spacing")}
    if "eta" in options:
        kwargs["noise_sampler"] = lambda s, s_next, g=torch.Generator().manual_seed(1): torch.randn(
            x_T.shape, generator=g, dtype=torch.float64)
    model = lambda x, sigma: exact_d(x, sigma.reshape(-1, 1, 1, 1))  # noqa: E731
    want = getattr(k_sampling, function)(model, x_T, sigmas, disable=True, **kwargs)
    got = factory("sampler", name)(gaussian_denoise_fn(p), p, x_T, steps=15,
                                   generator=torch.Generator().manual_seed(1), **options)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
