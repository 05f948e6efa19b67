"""A learned variance (the hybrid objective) through the denoise record, the ancestral and DDIM samplers, and a run."""

from __future__ import annotations

import math

import pytest
import torch

from gentool.diffusion import Diffusion
from gentool.model import DiffusionModel
from gentool.parameterisation import Denoised
from gentool.sampling import make_denoise_fn
from gentool.testing import denoise_from_eps, gaussian_eps_fn
from gentool_samplers.ancestral import ancestral
from gentool_samplers.ddim import ddim

T = 60


def diffusion() -> Diffusion:
    return Diffusion(torch.linspace(1e-3, 0.2, T, dtype=torch.float64))


def with_variance(denoise, v: float):
    """``denoise`` whose records carry a constant learned v, as make_denoise_fn's do for a hybrid model."""

    def fn(x, t):
        d = denoise(x, t)
        return Denoised(d.x0, d.eps, {"variance_v": torch.full_like(x, v)})

    return fn


def exact_denoise(d: Diffusion):
    """The exact denoiser of gentool.testing's Gaussian data, through the eps parameterisation."""
    return denoise_from_eps(gaussian_eps_fn(d), d)


def run_sampler(sampler, eps_fn, d, seed=0, **options):
    x_T = torch.randn((64, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    return sampler(eps_fn, d, x_T, steps=12, generator=torch.Generator().manual_seed(seed + 1), **options)


@pytest.mark.parametrize("v, fixed", [(1.0, "beta"), (-1.0, "beta_tilde")])
def test_ancestral_learned_variance_ends_are_the_fixed_variances(v, fixed):
    d = diffusion()
    exact = exact_denoise(d)
    learned = run_sampler(ancestral, with_variance(exact, v), d, clip_denoised=False)
    # the recipe's variance option is ignored by a learned-variance model: pass the other one
    other = "beta_tilde" if fixed == "beta" else "beta"
    learned_other = run_sampler(ancestral, with_variance(exact, v), d, clip_denoised=False, variance=other)
    want = run_sampler(ancestral, exact, d, clip_denoised=False, variance=fixed)
    assert torch.allclose(learned, want, atol=1e-5) and torch.allclose(learned_other, want, atol=1e-5)
    mid = run_sampler(ancestral, with_variance(exact, 0.0), d, clip_denoised=False)
    assert not torch.allclose(mid, want, atol=1e-3)


def test_ancestral_uses_the_geometric_mean_at_v_zero():
    """v = 0: sigma^2 = sqrt(beta beta-tilde) of each respaced step, checked through one step by hand."""
    d = diffusion()
    exact = exact_denoise(d)
    x_T = torch.randn((4096, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    seen = []
    ancestral(with_variance(exact, 0.0), d, x_T, steps=2, t_start=T - 1, clip_denoised=False,
              generator=torch.Generator().manual_seed(1), callback=lambda info: seen.append(info["x"]) and None)
    a_t, a_s = float(d.alphas_cumprod_64[T - 1]), float(d.alphas_cumprod_64[0])
    beta = 1 - a_t / a_s
    sd = (beta * beta * (1 - a_s) / (1 - a_t)) ** 0.25  # sqrt of the geometric mean of beta and beta-tilde
    eps = gaussian_eps_fn(d)(x_T, torch.full((4096,), T - 1))
    x0 = (x_T - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    mean = a_s**0.5 * beta / (1 - a_t) * x0 + (1 - beta) ** 0.5 * (1 - a_s) / (1 - a_t) * x_T
    z = (seen[0] - mean) / sd  # the step's noise, standardised: N(0, 1) if sigma is right
    assert abs(float(z.std()) - 1) < 0.05 and abs(float(z.mean())) < 0.06


def test_ddim_learned_variance():
    d = diffusion()
    exact = exact_denoise(d)
    # eta = 0 is deterministic: the learned variance plays no part
    assert torch.equal(run_sampler(ddim, with_variance(exact, 0.3), d), run_sampler(ddim, exact, d))
    # eta = 1 with v = -1 (beta-tilde) is eq. 16's DDPM-like sigma exactly
    got = run_sampler(ddim, with_variance(exact, -1.0), d, eta=1.0, clip_denoised=False)
    want = run_sampler(ddim, exact, d, eta=1.0, clip_denoised=False)
    assert torch.allclose(got, want, atol=1e-5)
    larger = run_sampler(ddim, with_variance(exact, 1.0), d, eta=1.0, clip_denoised=False)
    assert torch.isfinite(larger).all() and not torch.allclose(larger, want, atol=1e-3)


class TwoHeads(torch.nn.Module):
    """A 'denoiser' with 2C outputs: eps = 0.5 x, v = a per-label constant (to see the guided half)."""

    cond_dim = 2

    def forward(self, x, t, cond=None):
        v = torch.zeros_like(x) if cond is None else cond[:, :1, None, None].expand_as(x)
        return torch.cat([0.5 * x, v], 1)


class Labels(torch.nn.Module):
    num_classes = 3

    def forward(self, labels):
        return torch.stack([labels.float() / 10, torch.zeros_like(labels, dtype=torch.float)], 1)


def test_make_denoise_fn_splits_the_output_and_carries_v():
    model = DiffusionModel(TwoHeads(), Labels(), prediction="eps", learned_variance=True)
    d = diffusion()
    x, t = torch.randn(3, 2, 4, 4), torch.tensor([5, 6, 7])
    rec = make_denoise_fn(model, d, torch.tensor([0, 1, 2]), guidance=2.0)(x, t)
    assert rec.eps.shape == x.shape and torch.allclose(rec.eps, 0.5 * x)  # guidance mixes two equal halves
    v = rec.extras["variance_v"]
    assert v.shape == x.shape and v[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.1, 0.2])  # the conditional half
    plain = make_denoise_fn(DiffusionModel(TwoHeads(), Labels(), prediction="eps"), d, torch.tensor([0, 1, 2]))
    assert "variance_v" not in plain(x[:, :1], t).extras


def test_a_hybrid_run_trains_samples_and_scores_bpd_with_its_variance(tmp_path):
    from gentool.evaluation.bpd import bits_per_dim
    from gentool.recipe import load_recipe
    from gentool.run import build
    from gentool.testing import tiny_recipe

    data = tiny_recipe(tmp_path, conditional=False)
    data["objective"] = {"name": "hybrid"}
    data["denoiser"]["learn_sigma"] = True
    run = build(load_recipe(data=data), device="cpu")
    assert run.model.learned_variance and run.objective.learned_variance
    with torch.no_grad():  # a variance output that differs from the fixed choices
        run.sampling_model.denoiser.conv_out.bias[1:] = 0.5
    out = run.sample(2, steps=3, progress=False)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    denoise = run.denoise_fn()
    assert "variance_v" in denoise(x0, torch.full((2,), 3)).extras
    learned = bits_per_dim(denoise, run.diffusion, x0, timesteps=3, generator=torch.Generator().manual_seed(0))

    def without_variance(x, t):
        d = denoise(x, t)
        return Denoised(d.x0, d.eps)

    fixed = bits_per_dim(without_variance, run.diffusion, x0, timesteps=3, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(float(learned["bpd"].mean())) and not torch.allclose(learned["bpd"], fixed["bpd"])


def test_the_fast_denoise_fn_carries_the_same_variance():
    from gentool.sampling import make_fast_denoise_fn

    model = DiffusionModel(TwoHeads(), Labels(), prediction="v", learned_variance=True).eval()
    model.denoiser.register_parameter("w", torch.nn.Parameter(torch.zeros(1)))  # a device to find
    d = diffusion()
    x, t, labels = torch.randn(3, 2, 4, 4), torch.tensor([5, 6, 7]), torch.tensor([0, 1, 2])
    plain = make_denoise_fn(model, d, labels, guidance=1.0)(x, t)
    fast = make_fast_denoise_fn(model, d, labels, guidance=1.0, bf16=False, compile=False, channels_last=False)(x, t)
    assert torch.allclose(fast.eps, plain.eps, atol=1e-6) and torch.allclose(fast.x0, plain.x0, atol=1e-6)
    assert torch.equal(fast.extras["variance_v"], plain.extras["variance_v"])
    assert fast.extras["variance_v"][:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.1, 0.2])
