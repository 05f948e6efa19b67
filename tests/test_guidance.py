"""Classifier-free guidance (Ho and Salimans 2022): eps~ = (1 + w) eps(x, c) - w eps(x, null)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gentool
from gentool import Diffusion, DiffusionModel, guided_eps, make_denoise_fn
from gentool_conditioners.class_embedding import class_embedding


class ProbeDenoiser(nn.Module):
    """A denoiser whose output is a known function of (x_t, t, cond); it counts its calls."""

    def __init__(self, prediction: str = "eps", cond_dim: int = 4) -> None:
        super().__init__()
        self.prediction, self.cond_dim = prediction, cond_dim
        self.calls: list[int] = []

    def forward(self, x_t, t, cond=None):
        self.calls.append(x_t.shape[0])
        shift = cond.sum(dim=1).reshape(-1, 1, 1, 1) if cond is not None else 0.0
        return 0.3 * x_t + 0.001 * t.reshape(-1, 1, 1, 1) + shift


def probe_model(prediction: str = "eps"):
    torch.manual_seed(0)
    return DiffusionModel(ProbeDenoiser(prediction), class_embedding(4, num_classes=5)).eval()


def diffusion():
    return Diffusion(torch.linspace(1e-4, 0.02, 100, dtype=torch.float64))


def test_guided_eps_is_the_cfg_formula():
    c, u = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.25, 1.0, 0.5])
    assert torch.equal(guided_eps(c, u, 0.0), c)
    # (1 + 2) c - 2 u, by hand
    torch.testing.assert_close(guided_eps(c, u, 2.0), torch.tensor([2.5, -8.0, 0.5]))
    # the other common form: u + s (c - u) with s = 1 + w
    torch.testing.assert_close(guided_eps(c, u, 1.5), u + 2.5 * (c - u))


def test_w0_is_the_conditional_prediction_with_one_pass():
    model, diff = probe_model(), diffusion()
    x, t, labels = torch.randn(3, 1, 2, 2), torch.tensor([5, 50, 99]), torch.tensor([0, 4, 2])
    eps = make_denoise_fn(model, diff, labels, 0.0)(x, t).eps
    emb = model.conditioner.embedding.weight[labels]
    torch.testing.assert_close(eps, 0.3 * x + 0.001 * t.reshape(-1, 1, 1, 1) + emb.sum(1).reshape(-1, 1, 1, 1))
    assert model.denoiser.calls == [3]


@pytest.mark.parametrize("w", [0.5, 1.0, 3.0])
def test_guided_prediction_is_the_formula_in_one_fused_batch(w):
    model, diff = probe_model(), diffusion()
    x, t, labels = torch.randn(3, 1, 2, 2), torch.tensor([5, 50, 99]), torch.tensor([0, 4, 2])
    eps = make_denoise_fn(model, diff, labels, w)(x, t).eps
    assert model.denoiser.calls == [6]  # conditional and unconditional halves as one batch of 2B
    base = 0.3 * x + 0.001 * t.reshape(-1, 1, 1, 1)
    cond = base + model.conditioner.embedding.weight[labels].sum(1).reshape(-1, 1, 1, 1)
    uncond = base + model.conditioner.null.sum()
    torch.testing.assert_close(eps, (1 + w) * cond - w * uncond)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_guidance_combines_noise_predictions_whatever_the_network_predicts(prediction):
    model, diff = probe_model(prediction), diffusion()
    x, t, labels, w = torch.randn(2, 1, 2, 2), torch.tensor([10, 80]), torch.tensor([1, 3]), 2.0
    eps = make_denoise_fn(model, diff, labels, w)(x, t).eps
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), 0)[t].reshape(-1, 1, 1, 1).float()

    def to_eps(out):
        if prediction == "x0":  # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
            return (x - abar.sqrt() * out) / (1 - abar).sqrt()
        return abar.sqrt() * out + (1 - abar).sqrt() * x  # v = sqrt(abar) eps - sqrt(1 - abar) x0

    base = 0.3 * x + 0.001 * t.reshape(-1, 1, 1, 1)
    cond = to_eps(base + model.conditioner.embedding.weight[labels].sum(1).reshape(-1, 1, 1, 1))
    uncond = to_eps(base + model.conditioner.null.sum())
    torch.testing.assert_close(eps, (1 + w) * cond - w * uncond, rtol=1e-4, atol=1e-4)


def test_no_labels_means_the_unconditional_prediction():
    model, diff = probe_model(), diffusion()
    x, t = torch.randn(2, 1, 2, 2), torch.tensor([1, 2])
    eps = make_denoise_fn(model, diff, None, 3.0)(x, t).eps
    torch.testing.assert_close(eps, 0.3 * x + 0.001 * t.reshape(-1, 1, 1, 1) + model.conditioner.null.sum())


def two_class_eps(diff: Diffusion, m: float = 0.5):
    """Optimal conditional (point mass at -m / +m) and unconditional (two-point) eps, as a 'network'.

    The 'cond' of the probe carries the label: +1, -1, or 0 for null.
    """
    abar = diff.alphas_cumprod_64

    class Exact(nn.Module):
        prediction, cond_dim = "eps", 1

        def forward(self, x_t, t, cond=None):
            a = abar[t].reshape(-1, 1, 1, 1)
            x = x_t.double()
            sign = cond.double().reshape(-1, 1, 1, 1)
            mix = m * torch.tanh(a.sqrt() * m * x.sum(dim=(1, 2, 3), keepdim=True) / (1 - a))
            x0 = torch.where(sign == 0, mix, sign * m)
            return ((x - a.sqrt() * x0) / (1 - a).sqrt()).float()

    class Sign(nn.Module):
        num_classes = 2

        def forward(self, labels):
            return torch.where(labels < 0, 0.0, 2.0 * labels.float() - 1.0)[:, None]

    return DiffusionModel(Exact(), Sign()).eval()


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
@pytest.mark.parametrize("w", [0.0, 2.0])
def test_guided_sampling_with_exact_predictors_lands_on_the_asked_class(sampler, w):
    # With exact eps for each class, conditional (and guided) samples must land on the class's point.
    diff = Diffusion(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    model = two_class_eps(diff)
    labels = torch.tensor([0, 1] * 16)
    fn = gentool.registry().get("sampler", sampler).factory
    x = fn(make_denoise_fn(model, diff, labels, w), diff, torch.randn(32, 1, 2, 2, generator=torch.Generator().manual_seed(0)),
           steps=20)
    target = (labels.float() - 0.5).reshape(-1, 1, 1, 1)
    assert (x - target).abs().max() < 0.02
