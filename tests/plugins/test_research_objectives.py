"""Min-SNR-gamma, offset noise and the hybrid (learned-variance) objective, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gentool.diffusion import Diffusion
from gentool_objectives.hybrid import hybrid
from gentool_objectives.min_snr import min_snr_weight, snr_of
from gentool_objectives.offset_noise import offset_noise

T = 100
BETAS = np.linspace(1e-4, 0.05, T)


def numpy_snr(b: np.ndarray) -> np.ndarray:
    a = np.cumprod(1 - b)  # alpha-bar from the betas, independently of gentool
    return a / (1 - a)


@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weights_match_the_closed_forms(gamma):
    diffusion = Diffusion(torch.tensor(BETAS))
    t = torch.arange(T)
    snr = numpy_snr(BETAS)
    assert (snr > gamma).any() and (snr < gamma).any()  # both sides of the clip are exercised
    got_snr = snr_of(diffusion, t)
    np.testing.assert_allclose(got_snr.numpy(), snr, rtol=1e-9)
    want = {"eps": np.minimum(snr, gamma) / snr, "v": np.minimum(snr, gamma) / (snr + 1), "x0": np.minimum(snr, gamma)}
    for prediction, w in want.items():
        np.testing.assert_allclose(min_snr_weight(got_snr, gamma, prediction).numpy(), w, rtol=1e-9,
                                   err_msg=prediction)


def test_min_snr_eps_weight_is_one_at_zero_snr():
    snr = torch.tensor([0.0, 0.5, 50.0], dtype=torch.float64)
    assert min_snr_weight(snr, 5.0, "eps").tolist() == pytest.approx([1.0, 1.0, 0.1])
    assert min_snr_weight(snr, 5.0, "v").tolist() == pytest.approx([0.0, 0.5 / 1.5, 5 / 51])
    with pytest.raises(ValueError, match="prediction"):
        min_snr_weight(snr, 5.0, "score")


def test_offset_noise_adds_one_constant_per_image_and_channel():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(512, 3, 8, 8, generator=g)
    out = offset_noise(noise, 0.5, torch.Generator().manual_seed(1))
    offset = out - noise
    assert torch.allclose(offset, offset[:, :, :1, :1].expand_as(offset), atol=1e-6)  # constant over the pixels
    per = offset[:, :, 0, 0] / 0.5  # N(0, 1) per image and channel
    assert abs(float(per.mean())) < 4 / math.sqrt(per.numel()) and abs(float(per.std()) - 1) < 0.05
    assert per[:, 0].std() > 0 and not torch.allclose(per[:, 0], per[:, 1])
    assert offset_noise(noise, 0.0, g) is noise  # off: nothing drawn


class FixedOutput(torch.nn.Module):
    """A 'network' whose output is a parameter: the gradients of the loss land on it directly."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = torch.nn.Parameter(out.clone())

    def forward(self, x_t, t, labels=None):
        return self.out


def test_hybrid_loss_is_zero_for_the_true_eps_and_the_posterior_variance():
    """With eps_hat = eps and v = -1 (sigma^2 = beta-tilde) the model's Gaussian is the posterior: KL = 0 at t >= 1."""
    diffusion = Diffusion(torch.tensor(BETAS))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([1, 30, 60, T - 1])
    net = FixedOutput(torch.cat([noise, -torch.ones_like(noise)], 1))
    loss, logs = hybrid().loss(net, diffusion, x0, None, t, noise)
    assert loss.shape == (4,) and loss.dtype == torch.float32
    assert loss.abs().max() < 1e-4 and set(logs) == {"mse", "vlb"}


def test_hybrid_loss_is_l_simple_plus_lambda_t_times_the_term_and_stops_the_mean_gradient():
    diffusion = Diffusion(torch.tensor(BETAS))
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 2, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 70])
    pred = noise + 0.3 * torch.randn(x0.shape, generator=g)
    v = torch.rand(x0.shape, generator=g) * 2 - 1
    lam = 0.5
    net = FixedOutput(torch.cat([pred, v], 1))
    loss, logs = hybrid(vlb_weight=lam).loss(net, diffusion, x0, None, t, noise)
    mse = (pred - noise).square().flatten(1).mean(1)

    # the term at t, independently: numpy posterior and model Gaussians, KL per pixel, erf decoder at t = 0
    b = BETAS
    a = np.cumprod(1 - b)
    a_prev = np.concatenate([[1.0], a[:-1]])
    bt = b * (1 - a_prev) / (1 - a)
    log_bt = np.log(np.concatenate([[bt[1]], bt[1:]]))
    x_t = np.sqrt(a[t.numpy()])[:, None, None, None] * x0.double().numpy() \
        + np.sqrt(1 - a[t.numpy()])[:, None, None, None] * noise.double().numpy()
    terms = []
    for i, ti in enumerate(t.tolist()):
        c1, c2 = np.sqrt(a_prev[ti]) * b[ti] / (1 - a[ti]), np.sqrt(1 - b[ti]) * (1 - a_prev[ti]) / (1 - a[ti])
        x0_hat = (x_t[i] - np.sqrt(1 - a[ti]) * pred[i].double().numpy()) / np.sqrt(a[ti])
        m_true, m_model = c1 * x0[i].double().numpy() + c2 * x_t[i], c1 * x0_hat + c2 * x_t[i]
        frac = (v[i].double().numpy() + 1) / 2
        mv = np.exp(frac * np.log(b[ti]) + (1 - frac) * log_bt[ti])
        if ti == 0:
            s = np.sqrt(mv)
            cdf = np.vectorize(lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2))))
            xx = x0[i].double().numpy()
            hi = np.where(xx > 0.999, 1.0, cdf((xx + 1 / 255 - m_model) / s))
            lo = np.where(xx < -0.999, 0.0, cdf((xx - 1 / 255 - m_model) / s))
            terms.append(np.mean(-np.log(hi - lo)))
        else:
            pv = bt[ti]
            terms.append(np.mean(0.5 * (-1 + np.log(mv / pv) + pv / mv + (m_true - m_model) ** 2 / mv)))
    vlb = T * np.array(terms) / math.log(2)
    np.testing.assert_allclose(loss.detach().double().numpy(), mse.double().numpy() + lam * vlb, rtol=2e-4)
    assert float(logs["vlb"]) == pytest.approx(vlb.mean(), rel=2e-4)

    loss.sum().backward()
    grad_pred, grad_v = net.out.grad.chunk(2, 1)
    # stop-gradient: the prediction channels get the L_simple gradient only, 2 (pred - eps) / D
    D = x0[0].numel()
    assert torch.allclose(grad_pred, 2 * (pred - noise) / D, atol=1e-6)
    assert grad_v.abs().sum() > 0


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_hybrid_trains_a_learned_variance_unet(prediction):
    from gentool_unet.unet import unet

    torch.manual_seed(0)
    net = unet(in_channels=1, image_size=8, channels=32, channel_mult=[1, 2], num_res_blocks=1,
               attention_resolutions=[], dropout=0.0, class_cond=False, learn_sigma=True)
    assert net.learned_variance
    net.conv_out.weight.data.normal_(0, 0.01)  # the zero-initialised output would give no gradient to v's bias
    objective = hybrid(prediction=prediction)
    assert objective.learned_variance and objective.prediction == prediction
    diffusion = Diffusion(torch.tensor(BETAS))
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    t, noise = objective.draw(diffusion, x0, torch.Generator().manual_seed(0))
    assert net(x0, t).shape == (4, 2, 8, 8)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    loss, logs = objective.loss(lambda x, tt, labels: net(x, tt), diffusion, x0, None, t, noise)
    loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    opt.step()
    assert math.isfinite(float(logs["vlb"])) and math.isfinite(float(logs["mse"]))


def test_hybrid_refuses_a_network_without_the_variance_channels():
    diffusion = Diffusion(torch.tensor(BETAS))
    x0 = torch.zeros(2, 2, 4, 4)
    net = FixedOutput(torch.zeros(2, 2, 4, 4))  # C channels, not 2C
    with pytest.raises(ValueError, match="learn_sigma"):
        hybrid().loss(net, diffusion, x0, None, torch.tensor([1, 2]), torch.zeros_like(x0))


# -- the options of ``ddpm`` ----------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddpm_min_snr_weighting_scales_each_example_by_the_closed_form(prediction):
    from gentool_objectives.ddpm import ddpm

    diffusion = Diffusion(torch.tensor(BETAS))
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(6, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 5, 20, 40, 80, T - 1])
    net = FixedOutput(torch.randn(x0.shape, generator=g))
    plain, _ = ddpm(prediction=prediction).loss(net, diffusion, x0, None, t, noise)
    weighted, _ = ddpm(prediction=prediction, weighting="min_snr", min_snr_gamma=3.0).loss(net, diffusion, x0, None,
                                                                                             t, noise)
    snr = numpy_snr(BETAS)[t.numpy()]
    w = {"eps": np.minimum(snr, 3.0) / snr, "v": np.minimum(snr, 3.0) / (snr + 1), "x0": np.minimum(snr, 3.0)}
    np.testing.assert_allclose(weighted.detach().double().numpy(), w[prediction] * plain.detach().double().numpy(),
                               rtol=1e-5)
    assert not np.allclose(w[prediction], 1.0)  # the weights really differ from one


def test_ddpm_offset_noise_keeps_the_draws_of_plain_ddpm():
    from gentool_objectives.ddpm import ddpm

    diffusion = Diffusion(torch.tensor(BETAS))
    x0 = torch.zeros(8, 3, 4, 4)
    t0, n0 = ddpm().draw(diffusion, x0, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # Algorithm 1's draws, independently: randint, then randn
    assert torch.equal(t0, torch.randint(0, T, (8,), generator=g)) and torch.equal(n0, torch.randn(x0.shape, generator=g))
    t1, n1 = ddpm(offset_noise=0.1).draw(diffusion, x0, torch.Generator().manual_seed(3))
    assert torch.equal(t0, t1)
    delta = (n1 - n0) / 0.1
    assert torch.allclose(delta, delta[:, :, :1, :1].expand_as(delta), atol=1e-5) and delta.abs().max() > 0


@pytest.mark.parametrize("options", [{"min_snr_gamma": 0.0}, {"offset_noise": -0.1}])
def test_ddpm_refuses_bad_option_values(options):
    from gentool_objectives.ddpm import ddpm

    with pytest.raises(ValueError, match=next(iter(options))):
        ddpm(**options)


@pytest.mark.parametrize("name, options", [
    ("ddpm", {"weighting": "min_snr", "prediction": "v", "offset_noise": 0.1}),
    ("ddpm", {"weighting": "min_snr", "prediction": "x0"}),
    ("hybrid", {"prediction": "v", "offset_noise": 0.1}),
])
def test_the_options_pass_the_objective_contract(name, options):
    from gentool.testing import check_objective
    from gentool_objectives.ddpm import ddpm

    check_objective({"ddpm": ddpm, "hybrid": hybrid}[name], **options)
