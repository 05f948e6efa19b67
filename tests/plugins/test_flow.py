"""Flow matching (plugins/gentool_flow): the linear path, the velocity, the time distributions and shift, the solvers.

Every formula is checked against an independent computation: the papers'
closed forms written out here (Esser et al. 2024, eq. 19 and 23; the normal
CDF from math.erf), a 2x2 linear solve for the velocity's conversions, and the
exact probability-flow ODE of Gaussian data for the solvers' orders.
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


def flow(**options):
    return factory("process", "flow")(**options)


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def logit(x: float) -> float:
    return math.log(x / (1 - x))


# -- the process -----------------------------------------------------------------

def test_the_linear_path_and_its_closed_forms():
    p = flow()
    for t in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert p.alpha(t) == pytest.approx(1 - t, abs=1e-15) and p.sigma(t) == pytest.approx(t, abs=1e-15)
    for t in (0.01, 0.3, 0.77, 0.999):
        lam = 2 * math.log((1 - t) / t)
        assert float(p.log_snr(t)) == pytest.approx(lam, rel=1e-12)
        assert p.t_of_log_snr(lam) == pytest.approx(t, rel=1e-12)
        h = 1e-6  # the derivatives against central differences
        d_alpha, d_sigma = p.derivatives(t)
        assert d_alpha == pytest.approx((p.alpha(t + h) - p.alpha(t - h)) / (2 * h), rel=1e-6)
        assert d_sigma == pytest.approx((p.sigma(t + h) - p.sigma(t - h)) / (2 * h), rel=1e-6)
    assert torch.equal(p.noise_label(torch.tensor([0.0, 0.25, 1.0])), torch.tensor([0.0, 250.0, 1000.0]))


def test_the_time_shift_is_eq_23_and_moves_log_snr_by_2_log_alpha():
    # Esser et al. 2024: shifting t_n to t_m keeps the noise of an m-pixel image at that of an n-pixel one:
    # SNR(t_m) = SNR(t_n) / alpha^2 with alpha = sqrt(m / n), i.e. lambda(t_m) = lambda(t_n) - 2 log(alpha)
    from gentool_flow.process import shift_time, unshift_time

    alpha = math.sqrt(1024**2 / 256**2)
    for t_n in (0.05, 0.3, 0.5, 0.8, 0.99):
        t_m = shift_time(t_n, alpha)
        assert t_m == pytest.approx(alpha * t_n / (1 + (alpha - 1) * t_n), rel=1e-14)  # eq. 23 as printed
        lam_n, lam_m = 2 * math.log((1 - t_n) / t_n), 2 * math.log((1 - t_m) / t_m)
        assert lam_m == pytest.approx(lam_n - 2 * math.log(alpha), abs=1e-12)
        assert unshift_time(t_m, alpha) == pytest.approx(t_n, rel=1e-13)
    assert shift_time(0.0, 3.0) == 0.0 and shift_time(1.0, 3.0) == 1.0


def test_a_shifted_process_grid_starts_at_t_start_and_is_the_shifted_uniform_grid():
    from gentool_flow.process import shift_time

    p = flow(shift=3.0)
    grid = p.grid(4)
    assert grid == pytest.approx([shift_time(u, 3.0) for u in (1.0, 0.75, 0.5, 0.25)], rel=1e-14)
    assert grid[1] > 0.75  # more steps at high noise
    part = p.grid(4, 0.6)
    assert part[0] == 0.6 and all(a > b for a, b in zip(part, part[1:])) and part[-1] > 0
    assert flow().grid(4) == [1.0, 0.75, 0.5, 0.25]


# -- the velocity --------------------------------------------------------------

def processes_with_derivatives():
    return [flow(), factory("process", "edm")(), factory("process", "ve")()]


@pytest.mark.parametrize("process", processes_with_derivatives(), ids=lambda p: type(p).__name__)
def test_velocity_conversions_solve_the_2x2_system(process):
    from gentool_flow.velocity import Velocity

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64), torch.randn(3, 1, 2, 2, generator=g,
                                                                                         dtype=torch.float64)
    for t in (process.time_at(0.2), process.time_at(0.7), process.t_max):
        a, s = float(process.alpha(t)), float(process.sigma(t))
        da, ds = (float(v) for v in process.derivatives(t))
        x_t, u = a * x0 + s * eps, da * x0 + ds * eps
        system = torch.tensor([[a, s], [da, ds]], dtype=torch.float64)
        want = torch.linalg.solve(system, torch.stack([x_t.flatten(), u.flatten()]))
        d = Velocity().denoised(process, x_t, t, u)
        torch.testing.assert_close(d.x0.flatten(), want[0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(d.eps.flatten(), want[1], rtol=1e-10, atol=1e-10)
        tt = torch.full((3,), t, dtype=torch.float64)
        torch.testing.assert_close(Velocity().target(process, x0, eps, tt), u, rtol=1e-12, atol=1e-12)


def test_on_the_linear_path_x0_is_x_minus_t_u_and_eps_is_x_plus_one_minus_t_u():
    from gentool_flow.velocity import Velocity

    x, u = torch.randn(4, 1, 3, 3, dtype=torch.float64), torch.randn(4, 1, 3, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.25, 0.6, 1.0], dtype=torch.float64)
    d = Velocity().denoised(flow(), x, t, u)
    tb = t.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(d.x0, x - tb * u, rtol=0, atol=1e-15)
    torch.testing.assert_close(d.eps, x + (1 - tb) * u, rtol=0, atol=1e-15)


# -- the objective ---------------------------------------------------------------

def test_logit_normal_draws_follow_eq_19():
    objective = factory("objective", "flow_matching")(time="logit_normal", m=0.5, s=0.8)
    t, _ = objective.draw(flow(), torch.zeros(40000, 1), torch.Generator().manual_seed(0))
    t = t.double().sort().values
    for x in (0.1, 0.3, 0.5, 0.62, 0.9):  # the CDF of sigmoid(m + s n): Phi((logit x - m) / s)
        assert float((t <= x).double().mean()) == pytest.approx(normal_cdf((logit(x) - 0.5) / 0.8), abs=0.01)
    from gentool_flow.objective import logit_normal_density

    grid = torch.linspace(1e-6, 1 - 1e-6, 200001, dtype=torch.float64)
    pdf = logit_normal_density(grid, 0.5, 0.8)
    assert float(torch.trapezoid(pdf, grid)) == pytest.approx(1.0, abs=1e-6)
    x = 0.37  # eq. 19 at one point, term by term
    want = 1 / (0.8 * math.sqrt(2 * math.pi)) / (x * (1 - x)) * math.exp(-(logit(x) - 0.5) ** 2 / (2 * 0.8**2))
    assert float(logit_normal_density(torch.tensor(x, dtype=torch.float64), 0.5, 0.8)) == pytest.approx(want, rel=1e-12)


def test_shifted_uniform_and_logit_normal_times_have_the_shifted_cdfs():
    # shifting by alpha subtracts log(alpha) from logit(t): P(shifted <= x) = P(t <= sigmoid(logit(x) - log alpha))
    n = 40000
    uniform = factory("objective", "flow_matching")(time="uniform", shift=3.0)
    t, _ = uniform.draw(flow(), torch.zeros(n, 1), torch.Generator().manual_seed(1))
    assert float(t.min()) > 0 and float(t.max()) <= 1
    for x in (0.2, 0.5, 0.8):
        back = 1 / (1 + math.exp(-(logit(x) - math.log(3.0))))
        assert float((t <= x).double().mean()) == pytest.approx(back, abs=0.01)
    ln = factory("objective", "flow_matching")(time="logit_normal", shift=3.0)
    t, _ = ln.draw(flow(), torch.zeros(n, 1), torch.Generator().manual_seed(2))
    for x in (0.2, 0.5, 0.8):
        assert float((t <= x).double().mean()) == pytest.approx(normal_cdf(logit(x) - math.log(3.0)), abs=0.01)


def test_the_loss_is_the_squared_error_of_the_velocity_eps_minus_x0():
    objective = factory("objective", "flow_matching")()
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 2, 3, 3, generator=g)
    t, noise = objective.draw(flow(), x0, g)
    seen = {}

    def net(x_t, tt, labels):
        seen["x_t"] = x_t
        return torch.full_like(x_t, 0.3)

    per, _ = objective.loss(net, flow(), x0, None, t, noise)
    tb = t.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(seen["x_t"], (1 - tb) * x0 + tb * noise)
    want = (0.3 - (noise - x0)).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(per, want)


@pytest.mark.parametrize("options, message", [({"time": "beta"}, "uniform, logit_normal"),
                                              ({"s": 0.0}, "s must be"), ({"shift": -1.0}, "shift must be")])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        factory("objective", "flow_matching")(**options)


# -- the solvers --------------------------------------------------------------------

def flow_ode_error(name: str, steps: int, process=None, **options) -> float:
    """The error at t = 0 against the exact ODE solution: for data N(0, S^2) every marginal is N(0, v_t) and the
    flow maps x_T affinely, x_0 = x_T S / sqrt(v_T) (v_T = alpha_T^2 S^2 + sigma_T^2)."""
    process = process or flow()
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = x_T * process.prior_std
    a, s = float(process.alpha(process.t_max)), float(process.sigma(process.t_max))
    exact = x_T * DATA_STD / math.sqrt(a**2 * DATA_STD**2 + s**2)
    x = factory("sampler", name)(gaussian_denoise_fn(process), process, x_T, steps=steps, **options)
    return float((x - exact).abs().max())


SOLVERS = [("euler", 1), ("midpoint", 2), ("heun", 2)]


@pytest.mark.parametrize("name, order", SOLVERS)
@pytest.mark.parametrize("process_name, spacing", [("flow", "uniform"), ("edm", "karras")])
def test_on_gaussian_data_each_ode_solver_s_error_falls_at_least_at_its_order(name, order, process_name, spacing):
    # the exact solution is known here; the midpoint rule happens to be third order on this linear ODE
    process = factory("process", process_name)()
    errors = [flow_ode_error(name, n, process, spacing=spacing) for n in (16, 32, 64, 128)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(r > 0.8 * 2**order for r in ratios[1:]), (errors, ratios)
    if order == 1:
        assert all(r < 1.3 * 2 for r in ratios), (errors, ratios)


MU, S = 0.6, 0.2  # data: an equal mixture of N(-MU, S^2) and N(MU, S^2)


def mixture_velocity(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) of the two-Gaussian data on the linear path, exactly: each component's posterior
    mean mu + a S^2 (x - a mu) / v, weighted by its marginal N(a mu, v), v = a^2 S^2 + s^2; eps = 0 at t = 0."""
    a, s = 1 - t, t
    v = a**2 * S**2 + s**2
    w_plus = torch.sigmoid(((x + a * MU) ** 2 - (x - a * MU) ** 2) / (2 * v))
    x0 = w_plus * (MU + a * S**2 * (x - a * MU) / v) + (1 - w_plus) * (-MU + a * S**2 * (x + a * MU) / v)
    return x0, (x - a * x0) / s if s > 0 else torch.zeros_like(x)


def rk4_flow(x: torch.Tensor, n: int) -> torch.Tensor:
    """The classical Runge-Kutta method (fourth order) on dx/dt = eps_hat - x0_hat from t = 1 to 0."""
    def u(x, t):
        x0, eps = mixture_velocity(x, t)
        return eps - x0

    h = -1 / n
    for i in range(n):
        t = 1 - i / n
        k1 = u(x, t)
        k2 = u(x + h / 2 * k1, t + h / 2)
        k3 = u(x + h / 2 * k2, t + h / 2)
        k4 = u(x + h * k3, t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


@pytest.mark.parametrize("name, order", SOLVERS)
def test_on_two_gaussians_each_ode_solver_s_error_falls_at_its_order(name, order):
    # a nonlinear denoiser: no special structure; the reference is RK4 with many steps
    def denoise(x, t):
        return Denoised(*mixture_velocity(x, float(t)))

    x_T = torch.randn(128, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = rk4_flow(x_T, 2048)
    errors = [float((factory("sampler", name)(denoise, flow(), x_T, steps=n, spacing="uniform") - exact).abs().max())
              for n in (32, 64, 128)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(0.8 * 2**order < r < 1.3 * 2**order for r in ratios), (errors, ratios)


def test_euler_with_uniform_spacing_is_the_flow_euler_method():
    p = flow()
    denoise = gaussian_denoise_fn(p)
    x = x_T = torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    n = 7
    for i in range(n):  # x <- x + (s - t) u(x, t), u = eps_hat - x0_hat, t from 1 down in steps of 1/n
        t, s = 1 - i / n, 1 - (i + 1) / n
        d = denoise(x, t)
        x = x + (s - t) * (d.eps - d.x0)
    got = factory("sampler", "euler")(denoise, p, x_T, steps=n, spacing="uniform")
    torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-12)


def test_midpoint_is_the_explicit_midpoint_rule_in_t():
    p = flow()
    denoise = gaussian_denoise_fn(p)

    def u(x, t):
        d = denoise(x, t)
        return d.eps - d.x0

    x = x_T = torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    n = 5
    for i in range(n):
        t, h = 1 - i / n, -1 / n
        x = x + h * u(x + h / 2 * u(x, t), t + h / 2)
    got = factory("sampler", "midpoint")(denoise, p, x_T, steps=n)
    torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-12)


def test_midpoint_refuses_the_discrete_chain():
    from gentool.compat import sampler_fits
    from gentool.testing import reference_diffusion

    why = sampler_fits(factory("sampler", "midpoint"), reference_diffusion())
    assert why and "derivatives" in why and "heun" in why
    assert sampler_fits(factory("sampler", "midpoint"), flow()) is None


def test_guided_flow_velocity_is_the_cfg_mix_of_the_velocities():
    # classifier-free guidance mixes x0 and eps; the velocity is affine in them, so it is the velocities' mix
    from gentool_flow.velocity import Velocity

    p, v = flow(), Velocity()
    x, t, w = torch.randn(2, 1, 2, 2, dtype=torch.float64), 0.4, 2.5
    u_c, u_u = torch.randn_like(x), torch.randn_like(x)
    cond, uncond = v.denoised(p, x, t, u_c), v.denoised(p, x, t, u_u)
    guided = v.guide(p, x, t, cond, uncond, w)
    want = v.denoised(p, x, t, (1 + w) * u_c - w * u_u)
    torch.testing.assert_close(guided.x0, want.x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(guided.eps, want.eps, rtol=1e-12, atol=1e-12)
    assert isinstance(guided, Denoised)
