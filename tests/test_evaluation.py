"""Evaluation: FID/KID/PR through the whole pipeline, the reference cache, weights errors, bits/dim."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gentool.testing import denoise_from_eps

import gentool
from gentool.config import EvalConfig
from gentool.diffusion import Diffusion
from gentool.evaluation import FeatureExtractorError, build_extractor, evaluate, evaluate_in_training, to_rgb_uint8
from gentool.evaluation import reference
from gentool.evaluation.bpd import bits_per_dim, discretized_gaussian_log_likelihood
from gentool.evaluation.evaluate import eval_config, parse_metrics
from gentool.recipe import RecipeError, load_recipe

CNN = "gentool-cnn28"


def recipe_data(tmp_path, *, size=28, n=200, eval_table=None, timesteps=20):
    data = {
        "run": {"name": "ev", "output_dir": str(tmp_path / "runs")},
        "data": {"name": "toy", "n": n, "image_size": size, "channels": 1, "num_classes": 4},
        "schedule": {"name": "linear", "timesteps": timesteps},
        "denoiser": {"name": "unet", "in_channels": 1, "image_size": size, "channels": 32, "channel_mult": [1],
                     "num_res_blocks": 1, "attention_resolutions": [], "dropout": 0.0, "class_cond": False},
        "train": {"steps": 0, "test_loss_timesteps": [3, 10]},
    }
    if eval_table is not None:
        data["eval"] = eval_table
    return data


def make_run(tmp_path, **kw):
    return gentool.build(load_recipe(data=recipe_data(tmp_path, **kw)), device="cpu")


def replay_data(run, shift: float = 0.0):
    """A stand-in for ``run.sample`` returning the training images in order (plus ``shift``)."""
    data = run.dataset("train")
    state = {"next": 0}

    def sample(n, **kwargs):
        i = state["next"]
        state["next"] += n
        x = torch.stack([data[j][0] for j in range(i, i + n)])
        return (x + shift).clamp(-1, 1)

    return sample


def config(**kw):
    base = {"metrics": ["fid", "kid", "prc"], "n": 200, "batch_size": 100, "feature_extractor": CNN}
    return EvalConfig(**{**base, **kw})


# -- FID, KID, precision/recall through the pipeline --------------------------

def test_fid_of_the_data_against_itself_is_zero_and_a_shift_raises_it(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    monkeypatch.setattr(run, "sample", replay_data(run))
    same = evaluate(run, config(), cache_dir=tmp_path / "cache", progress=False)["metrics"]
    monkeypatch.setattr(run, "sample", replay_data(run, shift=0.3))
    shifted = evaluate(run, config(metrics=["fid", "prc"]), cache_dir=tmp_path / "cache", progress=False)["metrics"]
    assert abs(same["fid"]) < 1e-6, same
    assert shifted["fid"] > 1e-3 and shifted["fid"] > 1e4 * max(abs(same["fid"]), 1e-9), (same, shifted)
    assert same["precision"] == 1.0 and same["recall"] == 1.0  # every sample sits on a real image
    assert abs(same["kid"]) < 1e-6
    assert shifted["precision"] < 1.0


def test_grey_images_become_three_equal_uint8_channels():
    x = torch.tensor([-1.0, 0.0, 1.0, 0.5]).view(1, 1, 2, 2)
    u8 = to_rgb_uint8(x)
    assert u8.dtype == torch.uint8 and u8.shape == (1, 3, 2, 2)
    assert u8[0, :, 0, 0].tolist() == [0, 0, 0] and u8[0, :, 1, 0].tolist() == [255, 255, 255]
    assert torch.equal(u8[:, 0], u8[:, 1]) and torch.equal(u8[:, 1], u8[:, 2])
    assert u8[0, 0, 0, 1] == 128 and u8[0, 0, 1, 1] == 191  # round(127.5), round(191.25)
    with pytest.raises(ValueError, match="1 or 3"):
        to_rgb_uint8(torch.zeros(1, 2, 4, 4))


# -- the reference cache ------------------------------------------------------

class Counting(torch.utils.data.Dataset):
    def __init__(self, data):
        self.data, self.reads = data, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.reads += 1
        return self.data[i]


def test_reference_features_are_cached_on_disk_and_reused(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    counting = Counting(run.dataset("train"))
    run._datasets["train"] = counting
    monkeypatch.setattr(run, "sample", replay_data(run))
    first = evaluate(run, config(metrics=["fid"]), cache_dir=tmp_path / "cache", progress=False)
    reads = counting.reads
    assert reads >= 200 and first["reference"]["cached"] is False
    cache_file = Path(first["reference"]["cache_file"])
    assert cache_file.parent == tmp_path / "cache" and list(cache_file.parent.glob("toy-train-gentool-cnn28-*.pt")) == [cache_file]
    reference._MEMORY.clear()  # as in a new process: only the file remains
    monkeypatch.setattr(run, "sample", replay_data(run))
    counting.reads = 0
    second = evaluate(run, config(metrics=["fid"]), cache_dir=tmp_path / "cache", progress=False)
    sample_reads = counting.reads  # the stand-in sampler reads 200 images itself
    assert second["reference"]["cached"] is True and sample_reads == 200
    assert second["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], abs=1e-9)


def test_the_cache_key_follows_data_options_split_and_extractor(tmp_path):
    run = make_run(tmp_path)
    fx = build_extractor(run.registry, CNN)
    key = reference.reference_key(run, "train", 0, fx)
    path = reference.cache_file(tmp_path, key)
    assert reference.cache_file(tmp_path, reference.reference_key(run, "train", 0, fx)) == path
    assert reference.cache_file(tmp_path, reference.reference_key(run, "test", 0, fx)) != path
    assert reference.cache_file(tmp_path, reference.reference_key(run, "train", 50, fx)) != path
    other = make_run(tmp_path, n=100)
    assert reference.cache_file(tmp_path, reference.reference_key(other, "train", 0, fx)) != path
    seeded = build_extractor(run.registry, CNN)
    seeded.name = "renamed"
    assert reference.cache_file(tmp_path, reference.reference_key(run, "train", 0, seeded)) != path


# -- the feature extractor and its weights, checked before sampling -----------

def no_sampling(*args, **kwargs):
    raise AssertionError("sampling started before the weights were checked")


@pytest.mark.parametrize("extractor", [CNN, "inception-v3-compat"])
def test_a_missing_weights_file_fails_first_and_names_the_file(tmp_path, monkeypatch, extractor):
    run = make_run(tmp_path)
    monkeypatch.setattr(run, "sample", no_sampling)
    missing = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        evaluate(run, config(feature_extractor=extractor, feature_weights=str(missing)), progress=False)


@pytest.mark.parametrize("extractor", [CNN, "inception-v3-compat"])
def test_a_broken_weights_file_fails_first_and_names_the_file(tmp_path, monkeypatch, extractor):
    run = make_run(tmp_path)
    monkeypatch.setattr(run, "sample", no_sampling)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"this is not a weights file")
    with pytest.raises(ValueError, match=str(broken)):
        evaluate(run, config(feature_extractor=extractor, feature_weights=str(broken)), progress=False)
    wrong = tmp_path / "wrong.pth"
    torch.save({"some.weight": torch.zeros(2)}, wrong)
    with pytest.raises(ValueError, match=str(wrong)):
        evaluate(run, config(feature_extractor=extractor, feature_weights=str(wrong)), progress=False)


def test_an_extractor_with_random_weights_is_reported_before_any_work(tmp_path, monkeypatch):
    """gentool-cnn28 untrained: the warning (naming `gentool features train`) comes before the reference features."""
    run = make_run(tmp_path)
    monkeypatch.setattr(run, "sample", no_sampling)
    warned: list[str] = []

    class Stop(Exception):
        pass

    def reference_features(*args, **kwargs):  # the first minutes of work: the warning must be out by now
        assert warned, "the warning came after the reference features started"
        raise Stop

    import importlib

    module = importlib.import_module("gentool.evaluation.evaluate")
    monkeypatch.setattr(module, "reference_features", reference_features)
    with pytest.raises(Stop):
        evaluate(run, config(), progress=False, warn=warned.append)
    assert len(warned) == 1 and "gentool features train toy" in warned[0] and "random weights" in warned[0]


def test_an_unknown_extractor_lists_the_closest_names(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(FeatureExtractorError, match="gentool-cnn28"):
        build_extractor(run.registry, "gentool-cnn82")


def test_any_torch_fidelity_extractor_is_found_by_name(tmp_path):
    from torch_fidelity import FeatureExtractorBase, register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    class Mean(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.kwargs = kwargs

        @staticmethod
        def get_provided_features_list():
            return ("mean",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"fid": "mean", "kid": "mean", "prc": "mean"}[metric]

        def forward(self, x):
            return (x.float().mean((2, 3)),)

    if "test-mean" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("test-mean", Mean)
    run = make_run(tmp_path)
    fx = build_extractor(run.registry, "test-mean", metrics=["fid"])
    assert isinstance(fx, FEATURE_EXTRACTORS_REGISTRY["test-mean"]) and fx.get_requested_features_list() == ["mean"]
    with pytest.raises(FeatureExtractorError, match="isc"):
        evaluate(run, config(metrics=["isc"], feature_extractor="test-mean"), progress=False)


# -- recipe table and options --------------------------------------------------

def test_eval_table_is_validated_with_the_file_and_key(tmp_path):
    with pytest.raises(RecipeError, match=r"eval\.metrics.*'fid'"):
        load_recipe(data=recipe_data(tmp_path, eval_table={"metrics": ["fdi"]}))
    with pytest.raises(RecipeError, match=r"eval\.n: must be at least 1"):
        load_recipe(data=recipe_data(tmp_path, eval_table={"n": 0}))
    assert parse_metrics("fid, bpd") == ["fid", "bpd"]
    with pytest.raises(ValueError, match="did you mean 'isc'"):
        parse_metrics("fid,ics")
    run = make_run(tmp_path)
    cfg = eval_config(run, metrics="kid", n=None, split="test")
    assert cfg.metrics == ["kid"] and cfg.split == "test" and cfg.n == EvalConfig().n


# -- loss_t, bpd and evaluation during training ---------------------------------

def test_evaluate_in_training_restores_the_mode_and_the_global_rng(tmp_path, monkeypatch):
    table = {"metrics": ["fid", "loss_t", "bpd"], "n": 10, "batch_size": 10, "feature_extractor": CNN,
             "steps": 2, "data_batches": 1, "bpd_timesteps": 2, "every": 1}
    run = make_run(tmp_path, size=8, n=20, eval_table=table)
    monkeypatch.setenv("GENTOOL_CACHE_DIR", str(tmp_path / "cache"))
    run.model.train()
    state = torch.get_rng_state()
    metrics = evaluate_in_training(run, 0)
    assert torch.equal(torch.get_rng_state(), state) and run.model.training
    assert set(metrics) == {"fid", "loss_t/3", "loss_t/10", "bpd", "bpd_prior", "bpd_decoder", "bpd_vb"}
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["bpd"] == pytest.approx(metrics["bpd_prior"] + metrics["bpd_decoder"] + metrics["bpd_vb"])
    # an untrained U-Net predicts eps = 0, so the loss at every t is E[eps^2] = 1
    assert metrics["loss_t/3"] == pytest.approx(1.0, rel=0.15)


def test_discretized_gaussian_likelihood_matches_the_erf_formula():
    x = torch.tensor([-1.0, -1.0 + 2 / 255, 128 / 127.5 - 1, 1.0], dtype=torch.float64)  # grid values
    mean = torch.tensor([-0.95, -0.9, 0.05, 0.97], dtype=torch.float64)
    log_scale = torch.log(torch.tensor([0.05, 0.1, 0.02, 0.03], dtype=torch.float64))
    got = discretized_gaussian_log_likelihood(x, mean, log_scale)

    def cdf(v, m, s):
        return 0.5 * (1 + math.erf((v - m) / (s * math.sqrt(2))))

    want = []
    for xi, mi, si in zip(x.tolist(), mean.tolist(), log_scale.exp().tolist()):
        lo = -math.inf if xi < -0.999 else xi - 1 / 255
        hi = math.inf if xi > 0.999 else xi + 1 / 255
        p = (1.0 if hi == math.inf else cdf(hi, mi, si)) - (0.0 if lo == -math.inf else cdf(lo, mi, si))
        want.append(math.log(p))
    assert got.tolist() == pytest.approx(want, rel=1e-9)
    assert torch.exp(got).sum() < 1  # probabilities of bins


# Gaussian data x0 ~ N(MU, S^2) per pixel: E[x0 | x_t] is linear in x_t, so the optimal
# eps-predictor and every term of the bound are known in closed form.
MU, S, T = 0.1, 0.3, 50


def gaussian_case():
    betas = torch.linspace(0.1 / T, 20 / T, T, dtype=torch.float64)
    diffusion = Diffusion(betas)
    abar = diffusion.alphas_cumprod_64

    def eps_fn(x, t):  # eps = (x_t - sqrt(abar) E[x0 | x_t]) / sqrt(1 - abar)
        a = abar[t].float().view(-1, 1, 1, 1)
        x0 = MU + a.sqrt() * S**2 / (a * S**2 + 1 - a) * (x - a.sqrt() * MU)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    return diffusion, denoise_from_eps(eps_fn, diffusion), betas.numpy()


def closed_form_bpd(b: np.ndarray, variance: str) -> dict[str, float]:
    """Ho et al. eq. 5 for Gaussian data in float64 numpy, independently of gentool."""
    a = np.cumprod(1 - b)
    a_prev = np.concatenate([[1.0], a[:-1]])
    post_var = b * (1 - a_prev) / (1 - a)  # beta-tilde (eq. 7)
    model_var = np.concatenate([[post_var[1]], b[1:] if variance == "beta" else post_var[1:]])
    coef_x0 = b * np.sqrt(a_prev) / (1 - a)
    cond_var = S**2 * (1 - a) / (a * S**2 + 1 - a)  # Var(x0 | x_t)
    mv, pv = model_var[1:], post_var[1:]  # t >= 1 (0-based): the Gaussian KLs L_{t-1}
    kl = 0.5 * (-1 + np.log(mv / pv) + pv / mv + coef_x0[1:] ** 2 * cond_var[1:] / mv)
    prior = 0.5 * (-1 - np.log(1 - a[-1]) + (1 - a[-1]) + a[-1] * (MU**2 + S**2))
    # decoder: x0 - E[x0 | x_1] ~ N(0, cond_var[0]); Gauss-Hermite over it, bins of half-width 1/255
    z, w = np.polynomial.hermite_e.hermegauss(120)
    z, w = np.abs(z) * math.sqrt(cond_var[0]), w / w.sum()
    sd = math.sqrt(model_var[0])
    phi = np.vectorize(lambda u: 0.5 * math.erfc(-u / math.sqrt(2)))
    decoder = np.sum(w * -np.log(phi((-z + 1 / 255) / sd) - phi((-z - 1 / 255) / sd)))
    out = {"prior": prior, "vb": kl.sum(), "decoder": decoder}
    out["bpd"] = sum(out.values())
    return {k: v / math.log(2) for k, v in out.items()}


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_bits_per_dim_of_gaussian_data_matches_the_closed_form(variance):
    diffusion, eps_fn, b = gaussian_case()
    g = torch.Generator().manual_seed(0)
    x0 = MU + S * torch.randn((256, 1, 16, 16), generator=g)
    got = bits_per_dim(eps_fn, diffusion, x0, variance=variance, generator=g)
    want = closed_form_bpd(b, variance)
    for key in ("bpd", "vb", "decoder", "prior"):  # Monte Carlo over x0 and x_t: 4 standard errors
        tol = 4 * float(got[key].std()) / math.sqrt(x0.shape[0]) + 1e-3 * want[key]
        assert abs(float(got[key].mean()) - want[key]) < tol, (key, float(got[key].mean()), want[key], tol)
        assert key == "prior" or tol < 0.025 * want[key]  # the prior is ~1e-6 bits: T is long enough


def test_subsampled_timesteps_give_an_unbiased_estimate():
    diffusion, eps_fn, b = gaussian_case()
    g = torch.Generator().manual_seed(1)
    x0 = MU + S * torch.randn((2048, 1, 4, 4), generator=g)
    want = closed_form_bpd(b, "beta_tilde")["vb"]
    draws = [float(bits_per_dim(eps_fn, diffusion, x0, timesteps=5, variance="beta_tilde", generator=g)["vb"].mean())
             for _ in range(8)]
    spread = np.std(draws, ddof=1) / math.sqrt(len(draws))
    assert abs(np.mean(draws) - want) < 4 * spread + 0.01 * want, (np.mean(draws), want, spread)
    assert np.std(draws) > 0  # it really is sampling
