"""The learned variance and the bound's terms (gentool/vlb.py), against independent computations.

Independent means: numpy from the betas (not gentool's buffers), numerical
integrals for the KL, and math.erf or mpmath (50 digits) for the discretised Gaussian.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gentool.parameterisation import Denoised

from gentool.diffusion import Diffusion
from gentool.vlb import discretized_gaussian_log_likelihood, interpolate_log_variance, learned_log_variance, vlb_term

T = 40
BETAS = np.linspace(1e-3, 0.2, T)


def numpy_tables(b: np.ndarray) -> dict[str, np.ndarray]:
    a = np.cumprod(1 - b)
    a_prev = np.concatenate([[1.0], a[:-1]])
    beta_tilde = b * (1 - a_prev) / (1 - a)  # Ho et al. eq. 7; 0 at t = 0
    return {"abar": a, "abar_prev": a_prev, "beta_tilde": beta_tilde,
            "log_beta_tilde_clipped": np.log(np.concatenate([[beta_tilde[1]], beta_tilde[1:]]))}


def test_interpolation_hits_beta_and_beta_tilde_at_its_ends():
    diffusion = Diffusion(torch.tensor(BETAS))
    tab = numpy_tables(BETAS)
    t = torch.arange(T)
    ones = torch.ones(T, 1, 2, 2)
    top = learned_log_variance(diffusion, ones, t)[:, 0, 0, 0].double().numpy()
    bottom = learned_log_variance(diffusion, -ones, t)[:, 0, 0, 0].double().numpy()
    mid = learned_log_variance(diffusion, 0 * ones, t)[:, 0, 0, 0].double().numpy()
    np.testing.assert_allclose(top, np.log(BETAS), rtol=1e-5)  # v = 1: sigma^2 = beta_t
    np.testing.assert_allclose(bottom, tab["log_beta_tilde_clipped"], rtol=1e-5)  # v = -1: beta-tilde_t
    np.testing.assert_allclose(mid, 0.5 * (np.log(BETAS) + tab["log_beta_tilde_clipped"]), rtol=1e-5)
    assert (bottom[1:] < top[1:]).all()  # beta-tilde < beta away from t = 0


def test_interpolation_is_elementwise_and_differentiable():
    v = torch.tensor([-1.0, -0.5, 0.25, 1.0], requires_grad=True)
    out = interpolate_log_variance(torch.tensor(-2.0), torch.tensor(-6.0), v)
    assert out.tolist() == pytest.approx([-6.0, -5.0, -3.5, -2.0])
    out.sum().backward()
    assert v.grad.tolist() == pytest.approx([2.0] * 4)  # d/dv = (log beta - log beta-tilde) / 2


def kl_by_integration(m1: float, s1: float, m2: float, s2: float) -> float:
    """KL(N(m1, s1^2) || N(m2, s2^2)) = int p log(p / q), by the trapezoid rule."""
    x = np.linspace(m1 - 12 * s1, m1 + 12 * s1, 200_001)
    log_p = -0.5 * ((x - m1) / s1) ** 2 - math.log(s1 * math.sqrt(2 * math.pi))
    log_q = -0.5 * ((x - m2) / s2) ** 2 - math.log(s2 * math.sqrt(2 * math.pi))
    return float(np.trapezoid(np.exp(log_p) * (log_p - log_q), x))


def test_kl_terms_match_a_numerical_integral():
    diffusion = Diffusion(torch.tensor(BETAS))
    tab = numpy_tables(BETAS)
    t = torch.tensor([1, 7, 20, T - 1])
    x0 = torch.tensor([-0.4, 0.9, 0.1, -1.0], dtype=torch.float64).view(4, 1, 1, 1)
    x_t = torch.tensor([0.3, -1.2, 0.5, 2.0], dtype=torch.float64).view(4, 1, 1, 1)
    model_mean = torch.tensor([0.2, -0.8, 0.6, 1.5], dtype=torch.float64).view(4, 1, 1, 1)
    v = torch.tensor([0.3, -0.7, 1.0, -1.0]).view(4, 1, 1, 1)
    log_var = learned_log_variance(diffusion, v, t).double()
    got = vlb_term(diffusion, x0.float(), x_t.float(), t, model_mean.float(), log_var.float()) * math.log(2)
    for i, ti in enumerate(t.tolist()):
        a, a_prev, b = tab["abar"][ti], tab["abar_prev"][ti], BETAS[ti]
        true_mean = (math.sqrt(a_prev) * b * x0[i].item() + math.sqrt(1 - b) * (1 - a_prev) * x_t[i].item()) / (1 - a)
        frac = (v[i].item() + 1) / 2
        model_var = math.exp(frac * math.log(b) + (1 - frac) * tab["log_beta_tilde_clipped"][ti])
        want = kl_by_integration(true_mean, math.sqrt(tab["beta_tilde"][ti]), model_mean[i].item(), math.sqrt(model_var))
        assert float(got[i]) == pytest.approx(want, rel=2e-4, abs=1e-6), (ti, float(got[i]), want)


def test_decoder_term_is_the_discretised_gaussian_nll():
    diffusion = Diffusion(torch.tensor(BETAS))
    t = torch.zeros(3, dtype=torch.long)
    x0 = torch.tensor([-1.0, 10 / 127.5 - 1, 1.0]).view(3, 1, 1, 1)  # the end bins and an inner one
    mean = torch.tensor([-0.97, -0.9, 0.99]).view(3, 1, 1, 1)
    log_var = torch.log(torch.tensor([0.03, 0.05, 0.01]) ** 2).view(3, 1, 1, 1)
    got = vlb_term(diffusion, x0, torch.zeros_like(x0), t, mean, log_var) * math.log(2)

    def cdf(x, m, s):
        return 0.5 * (1 + math.erf((x - m) / (s * math.sqrt(2))))

    for i in range(3):
        x, m, s = x0[i].item(), mean[i].item(), math.exp(0.5 * log_var[i].item())
        hi = 1.0 if x > 0.999 else cdf(x + 1 / 255, m, s)
        lo = 0.0 if x < -0.999 else cdf(x - 1 / 255, m, s)
        assert float(got[i]) == pytest.approx(-math.log(hi - lo), rel=1e-5)


def eq13_mpmath(x: float, mean: float, scale: float) -> float:
    """log P(x) of Ho et al. eq. 13 with mpmath's normal CDF at 50 digits (an interval above 0 mirrored below it)."""
    import mpmath

    with mpmath.workdps(50):
        lo = -mpmath.inf if x < -0.999 else (mpmath.mpf(x) - mean - mpmath.mpf(1) / 255) / scale
        hi = mpmath.inf if x > 0.999 else (mpmath.mpf(x) - mean + mpmath.mpf(1) / 255) / scale
        if lo > 0:  # Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi): no cancellation at 50 digits
            lo, hi = -hi, -lo
        return float(mpmath.log(mpmath.ncdf(hi) - mpmath.ncdf(lo)))


# z: how many sigma the grid value x lies above the model's mean; interior and end bins, both tails
TAILS = [(x, z, s) for x in (-1.0, -1.0 + 2 / 255, 128 / 127.5 - 1, 1.0 - 2 / 255, 1.0)
         for z in (-95, -40, -12, -10, -8.5, -7, -3, 0, 0.4, 3, 7, 8.5, 10, 12, 40, 95) for s in (0.003, 0.02)]


def test_discretised_gaussian_matches_eq13_deep_in_both_tails():
    """Issue 24, defect 3: a difference of ndtr values underflowed below -8.3 sigma (log 1e-300 = -690.8 nats)."""
    x = torch.tensor([c[0] for c in TAILS], dtype=torch.float64)
    scale = torch.tensor([c[2] for c in TAILS], dtype=torch.float64)
    mean = x - torch.tensor([c[1] for c in TAILS], dtype=torch.float64) * scale
    got = discretized_gaussian_log_likelihood(x, mean, scale.log())
    want = [eq13_mpmath(*c) for c in zip(x.tolist(), mean.tolist(), scale.tolist())]
    assert got.tolist() == pytest.approx(want, rel=1e-12, abs=1e-14)
    assert min(want) < -4000  # the test reaches as deep as it says (95 sigma: about -4,500 nats)


@pytest.mark.parametrize("z", [-40, -20, -10, 10, 20, 40])
def test_discretised_gaussian_has_a_finite_gradient_far_in_the_tail(z):
    """The learned variance and the x0 prediction get a gradient from a pixel 10-40 sigma off (none from a clamp)."""
    x = torch.tensor([-1.0 + 40 / 255, 0.0, 1.0 - 40 / 255], dtype=torch.float64)  # interior bins
    mean = (x - z * 0.01).requires_grad_()
    log_scale = torch.full_like(x, math.log(0.01), requires_grad=True)
    discretized_gaussian_log_likelihood(x, mean, log_scale).sum().backward()
    for grad in (mean.grad, log_scale.grad):
        assert torch.isfinite(grad).all() and (grad.abs() > 1).all(), grad
    # d/d mean of log P pulls the mean towards x: d log P / d mean has the sign of z
    assert (mean.grad.sign() == math.copysign(1, z)).all() and (log_scale.grad > 0).all()


def test_terms_have_gradients_in_the_variance_only_where_asked():
    diffusion = Diffusion(torch.tensor(BETAS))
    t = torch.tensor([0, 5])
    x0 = torch.rand(2, 1, 3, 3) * 2 - 1
    x_t = torch.randn(2, 1, 3, 3)
    v = torch.zeros(2, 1, 3, 3, requires_grad=True)
    mean = torch.randn(2, 1, 3, 3)
    vlb_term(diffusion, x0, x_t, t, mean, learned_log_variance(diffusion, v, t)).sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all()) and v.grad.abs().sum() > 0


# -- bits/dim with a learned variance: Gaussian data, where every term has a closed form -------------
MU, S, TG = 0.1, 0.3, 50


def closed_form_bpd(b: np.ndarray, model_var: np.ndarray) -> float:
    """Ho et al. eq. 5 for data x0 ~ N(MU, S^2) and the optimal mean, with the reverse variances given."""
    tab = numpy_tables(b)
    a, a_prev, pv = tab["abar"], tab["abar_prev"], tab["beta_tilde"]
    coef_x0 = b * np.sqrt(a_prev) / (1 - a)
    cond_var = S**2 * (1 - a) / (a * S**2 + 1 - a)  # Var(x0 | x_t)
    mv = model_var[1:]
    kl = 0.5 * (-1 + np.log(mv / pv[1:]) + pv[1:] / mv + coef_x0[1:] ** 2 * cond_var[1:] / mv)
    prior = 0.5 * (-1 - np.log(1 - a[-1]) + (1 - a[-1]) + a[-1] * (MU**2 + S**2))
    z, w = np.polynomial.hermite_e.hermegauss(120)  # the decoder: x0 - E[x0 | x_1] ~ N(0, cond_var[0])
    z, w = np.abs(z) * math.sqrt(cond_var[0]), w / w.sum()
    sd = math.sqrt(model_var[0])
    phi = np.vectorize(lambda u: 0.5 * math.erfc(-u / math.sqrt(2)))
    decoder = np.sum(w * -np.log(phi((-z + 1 / 255) / sd) - phi((-z - 1 / 255) / sd)))
    return (prior + kl.sum() + decoder) / math.log(2)


@pytest.mark.parametrize("v", [-1.0, 0.4, 1.0])
def test_bits_per_dim_uses_the_learned_variance(v):
    from gentool.evaluation.bpd import bits_per_dim

    b = np.linspace(0.1 / TG, 20 / TG, TG)
    diffusion = Diffusion(torch.tensor(b))
    abar = diffusion.alphas_cumprod_64

    def denoise(x, t):  # the optimal prediction for Gaussian data, and a constant variance output v
        a = abar[t].float().view(-1, 1, 1, 1)
        x0 = MU + a.sqrt() * S**2 / (a * S**2 + 1 - a) * (x - a.sqrt() * MU)
        return Denoised(x0, (x - a.sqrt() * x0) / (1 - a).sqrt(), {"variance_v": torch.full_like(x, v)})

    g = torch.Generator().manual_seed(0)
    x0 = MU + S * torch.randn((256, 1, 16, 16), generator=g)
    got = bits_per_dim(denoise, diffusion, x0, variance="beta", generator=g)["bpd"]
    frac = (v + 1) / 2
    want = closed_form_bpd(b, np.exp(frac * np.log(b) + (1 - frac) * numpy_tables(b)["log_beta_tilde_clipped"]))
    tol = 4 * float(got.std()) / math.sqrt(x0.shape[0]) + 1e-3 * want
    assert abs(float(got.mean()) - want) < tol, (float(got.mean()), want, tol)


def test_bits_per_dim_under_zero_terminal_snr_takes_x0_from_the_model():
    """alpha-bar_{T-1} = 0: x0 = (x_t - eps) / 0 is undefined, so bits/dim uses the record's x0 (a v model's own)."""
    from gentool.diffusion import rescale_zero_terminal_snr
    from gentool.evaluation.bpd import bits_per_dim

    b = rescale_zero_terminal_snr(torch.linspace(0.1 / TG, 20 / TG, TG, dtype=torch.float64)).numpy()
    assert b[-1] == 1.0
    diffusion = Diffusion(torch.tensor(b))
    abar = diffusion.alphas_cumprod_64

    def eps_and_x0(x, t):  # the optimal x0 = E[x0 | x_t] for Gaussian data, finite at abar = 0
        a = abar[t].float().view(-1, 1, 1, 1)
        x0 = MU + a.sqrt() * S**2 / (a * S**2 + 1 - a) * (x - a.sqrt() * MU)
        return (x - a.sqrt() * x0) / (1 - a).sqrt(), x0

    def denoise(x, t):
        eps, x0 = eps_and_x0(x, t)
        return Denoised(x0, eps)

    g = torch.Generator().manual_seed(0)
    x0 = MU + S * torch.randn((256, 1, 16, 16), generator=g)
    got = bits_per_dim(denoise, diffusion, x0, variance="beta_tilde", generator=g)["bpd"]
    assert torch.isfinite(got).all()
    want = closed_form_bpd(b, np.exp(numpy_tables(b)["log_beta_tilde_clipped"]))
    tol = 4 * float(got.std()) / math.sqrt(x0.shape[0]) + 1e-3 * want
    assert abs(float(got.mean()) - want) < tol, (float(got.mean()), want, tol)
