"""The guidance interval (Kynkaanniemi et al. 2024) and CFG rescale (Lin et al. 2024) against their formulas.

Kynkaanniemi et al., eq. 6: D_w(x; sigma) = D(x | c) + (w - 1)(D(x | c) - D(x)) for sigma in
(sigma_lo, sigma_hi], else D(x | c): outside the interval the prediction is the
conditional one, from one network evaluation. Lin et al. (2024), sec. 3.4,
eq. 13-16, on the v prediction of their model: v_cfg = v_neg + s (v_pos - v_neg),
sigma_pos = std(v_pos), sigma_cfg = std(v_cfg), v_rescaled = v_cfg sigma_pos / sigma_cfg,
v_final = phi v_rescaled + (1 - phi) v_cfg.
"""

from __future__ import annotations

import math

import pytest
import torch

import gentool
from gentool import Denoised, load_recipe
from gentool.recipe import RecipeError
from gentool.sampling import Guidance, make_denoise_fn, rescaled
from gentool.service import SamplingOptions, plan
from gentool.testing import tiny_recipe, tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"), conditional=True, timesteps=20)


def counting(model) -> list[int]:
    """Rows through the denoiser, one entry per call."""
    rows: list[int] = []
    model.denoiser.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    return rows


def karras_sigma_of_step(run, t: int) -> float:
    abar = float(run.process.alphas_cumprod_64[t])
    return math.sqrt((1 - abar) / abar)


def test_outside_the_interval_guided_is_the_conditional_prediction_from_one_evaluation(run):
    model = run.sampling_model.eval()
    rows = counting(model)
    labels = torch.tensor([0, 1, 1])
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigmas = {t: karras_sigma_of_step(run, t) for t in range(20)}
    lo, hi = sigmas[5], sigmas[12]  # guide where sigma is in (sigma_5, sigma_12]: steps 6..12
    interval = make_denoise_fn(model, run.process, labels, Guidance(3.0, (lo, hi)))
    everywhere = make_denoise_fn(model, run.process, labels, Guidance(3.0))
    conditional = make_denoise_fn(model, run.process, labels, Guidance(0.0))
    with torch.no_grad():
        for t in (2, 5, 6, 12, 13, 19):
            inside = lo < sigmas[t] <= hi
            rows.clear()
            got = interval(x, t)
            assert rows == ([6] if inside else [3]), t  # one evaluation: the doubled batch, or the batch
            want = (everywhere if inside else conditional)(x, t)
            torch.testing.assert_close(got.x0, want.x0, rtol=0, atol=0)
            torch.testing.assert_close(got.eps, want.eps, rtol=0, atol=0)
        assert [t for t in range(20) if lo < sigmas[t] <= hi] == list(range(6, 13))


def test_times_per_example_are_guided_where_each_lies_in_the_interval(run):
    model = run.sampling_model.eval()
    labels = torch.tensor([0, 1, 0])
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    lo, hi = karras_sigma_of_step(run, 5), karras_sigma_of_step(run, 12)
    interval = make_denoise_fn(model, run.process, labels, Guidance(2.0, (lo, hi)))
    t = torch.tensor([3, 8, 15])
    with torch.no_grad():
        got = interval(x, t)
        for i, step in enumerate(t.tolist()):
            w = 2.0 if lo < karras_sigma_of_step(run, step) <= hi else 0.0
            want = make_denoise_fn(model, run.process, labels[i:i + 1], Guidance(w))(x[i:i + 1], step)
            torch.testing.assert_close(got.x0[i:i + 1], want.x0, rtol=1e-5, atol=1e-6)


def v_of(d: Denoised, a, s):
    return a * d.eps - s * d.x0


@pytest.mark.parametrize("where", ["chain", "flow t = 1", "edm"])
def test_rescale_is_eq_14_16_on_the_v_prediction(where):
    g = torch.Generator().manual_seed(2)
    if where == "chain":
        process, t = gentool.testing.reference_diffusion(), 120
    elif where == "flow t = 1":
        process, t = gentool.registry().get("process", "flow").factory(), 1.0
    else:
        process, t = gentool.registry().get("process", "edm").factory(), 7.0
    a, s = float(process.alpha(t)), float(process.sigma(t))
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)

    def record(x0):  # a prediction consistent with x: eps = (x - a x0) / s
        return Denoised(x0, (x - a * x0) / s)

    cond, uncond = record(torch.randn(x.shape, generator=g, dtype=torch.float64)), \
        record(0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64))
    w, phi = 4.0, 0.7
    guided = Denoised((1 + w) * cond.x0 - w * uncond.x0, (1 + w) * cond.eps - w * uncond.eps)
    got = rescaled(process, x, t, guided, cond, phi)

    v_pos, v_neg = v_of(cond, a, s), v_of(uncond, a, s)
    v_cfg = v_neg + (1 + w) * (v_pos - v_neg)  # eq. 13 with Lin et al.'s scale s = 1 + w
    want_v = torch.empty_like(v_cfg)
    for i in range(x.shape[0]):  # eq. 14-16, image by image
        sd_pos, sd_cfg = float(v_pos[i].std()), float(v_cfg[i].std())
        want_v[i] = phi * v_cfg[i] * sd_pos / sd_cfg + (1 - phi) * v_cfg[i]
    torch.testing.assert_close(v_of(got, a, s), want_v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a * got.x0 + s * got.eps, x, rtol=1e-10, atol=1e-10)  # still on x_t
    if a > 0:
        assert not torch.allclose(got.x0, guided.x0)


def test_the_sampling_path_applies_the_rescale_after_the_guidance(run):
    model = run.sampling_model.eval()
    labels = torch.tensor([0, 1])
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = make_denoise_fn(model, run.process, labels, Guidance(2.0))(x, 9)
        cond = make_denoise_fn(model, run.process, labels, Guidance(0.0))(x, 9)
        got = make_denoise_fn(model, run.process, labels, Guidance(2.0, None, 0.5))(x, 9)
    want = rescaled(run.process, x, 9, plain, cond, 0.5)
    torch.testing.assert_close(got.x0, want.x0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.eps, want.eps, rtol=1e-5, atol=1e-6)


# -- the recipe keys -----------------------------------------------------------------------

def recipe(tmp_path, **sampler):
    data = tiny_recipe(tmp_path / "runs")
    data["sampler"] = {"name": "ddim", "steps": 5, "guidance": 2.0, **sampler}
    return data


def test_recipe_keys_are_read_dumped_and_the_defaults_of_a_plan(tmp_path, run):
    spec = load_recipe(data=recipe(tmp_path, guidance_interval=[0.5, 9.0], guidance_rescale=0.7)).sampler
    assert spec.guidance_interval == (0.5, 9.0) and spec.guidance_rescale == 0.7 and spec.options["eta"] == 0.0
    dumped = spec.to_dict()
    assert dumped["guidance_interval"] == [0.5, 9.0] and dumped["guidance_rescale"] == 0.7
    assert "guidance_interval" not in load_recipe(data=recipe(tmp_path)).sampler.to_dict()

    run.recipe.sampler = spec
    try:
        p = plan(run, SamplingOptions(labels=[0, 1]), fast=False)
        assert p.guidance == Guidance(2.0, (0.5, 9.0), 0.7)
        p = plan(run, SamplingOptions(labels=[0, 1], guidance_interval=(), guidance_rescale=0.0), fast=False)
        assert p.guidance == Guidance(2.0, None, 0.0)  # the request's, over the recipe's
    finally:
        run.recipe.sampler = load_recipe(data=tiny_recipe(tmp_path / "runs")).sampler


@pytest.mark.parametrize("key, value, message", [
    ("guidance_interval", [5.0, 1.0], "0 <= lo < hi"),
    ("guidance_interval", [1.0], "expected \\[lo, hi\\]"),
    ("guidance_interval", ["a", 2.0], "expected \\[lo, hi\\]"),
    ("guidance_interval", 3.0, "expected \\[lo, hi\\]"),
    ("guidance_rescale", 1.5, "in \\[0, 1\\]"),
    ("guidance_rescale", True, "in \\[0, 1\\]"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, key, value, message):
    with pytest.raises(RecipeError, match=f"sampler.{key}: .*{message}"):
        load_recipe(data=recipe(tmp_path, **{key: value}))


def test_an_open_upper_end_is_accepted(tmp_path):
    spec = load_recipe(data=recipe(tmp_path, guidance_interval=[0.3, math.inf])).sampler
    assert spec.guidance_interval == (0.3, math.inf)
