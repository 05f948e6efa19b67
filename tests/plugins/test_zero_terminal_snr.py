"""Zero terminal SNR (Lin et al. 2024): the rescaled schedules and sampling from alpha-bar_T = 0.

Algorithm 1 is re-computed here in plain Python floats; the samplers are run
on Gaussian data N(MU, S^2) per pixel with the exact v prediction of that data
(an oracle model) through :func:`gentool.make_denoise_fn`, exactly as a trained
v-prediction network is sampled, and must give the data's mean and variance.
"""

from __future__ import annotations

import math

import pytest
import torch

from gentool.plugins import registry
from _tiny import solver_samplers
from gentool import Diffusion, DiffusionModel, make_denoise_fn
from gentool.diffusion import rescale_zero_terminal_snr

#: the samplers that run on the discrete chain (midpoint needs a continuous process's derivatives)
SAMPLERS = solver_samplers(Diffusion(torch.linspace(1e-4, 0.02, 10, dtype=torch.float64)))
MU, S = 0.2, 0.25  # inside [-1, 1], which the samplers' clip_denoised keeps
#: second-order samplers are accurate in fewer steps; the rest get STEPS
FEW_STEPS, STEPS = {"dpmpp_2m": 25, "heun": 50}, 250


def schedule(name: str, **options):
    return registry().get("schedule", name).factory(**options)


def algorithm_1(betas: list[float]) -> list[float]:
    """Lin et al. (2024), Algorithm 1, written out with Python floats."""
    prod, sqrt_abar = 1.0, []
    for b in betas:
        prod *= 1.0 - b
        sqrt_abar.append(math.sqrt(prod))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    abar = [((v - last) * first / (first - last)) ** 2 for v in sqrt_abar]
    alphas = [abar[0]] + [abar[i] / abar[i - 1] for i in range(1, len(abar))]
    return [1.0 - a for a in alphas]


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_the_option_is_algorithm_1(name):
    plain = schedule(name, timesteps=200)
    betas = schedule(name, timesteps=200, zero_terminal_snr=True)
    assert torch.equal(schedule(name, timesteps=200, zero_terminal_snr=False), plain)
    torch.testing.assert_close(betas, torch.tensor(algorithm_1(plain.tolist()), dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)
    diffusion = Diffusion(betas)  # beta_T = 1 is accepted
    abar = diffusion.alphas_cumprod_64
    assert float(betas[-1]) == 1.0 and float(abar[-1]) == 0.0
    assert float(abar[0]) == pytest.approx(1 - float(plain[0]), rel=1e-12)  # alpha-bar_1 kept
    assert bool((abar[1:] < abar[:-1]).all())


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_the_rescaled_schedules_pass_the_schedule_contract(name):
    from gentool.testing import check_schedule

    betas = check_schedule(registry().get("schedule", name).factory, timesteps=50, zero_terminal_snr=True)
    assert float(betas[-1]) == 1.0


def test_the_helper_works_on_any_schedule_s_betas():
    betas = torch.linspace(0.01, 0.3, 12, dtype=torch.float64)  # not a registered schedule
    torch.testing.assert_close(rescale_zero_terminal_snr(betas), torch.tensor(algorithm_1(betas.tolist()),
                               dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_diffusion_refuses_a_beta_of_1_before_the_last_step():
    betas = torch.full((5,), 0.1, dtype=torch.float64)
    betas[2] = 1.0
    with pytest.raises(ValueError, match="only the last may be 1"):
        Diffusion(betas)


class Oracle(torch.nn.Module):
    """The exact prediction of Gaussian data N(MU, S^2): E[x0 | x_t] is linear in x_t."""

    conditioner = None
    learned_variance = False

    def __init__(self, diffusion: Diffusion, prediction: str):
        super().__init__()
        self.abar, self.prediction = diffusion.alphas_cumprod_64, prediction

    def forward(self, x, t, labels=None):
        a = self.abar[t].reshape(-1, 1, 1, 1)
        x64 = x.double()
        x0 = MU + a.sqrt() * S**2 / (a * S**2 + 1 - a) * (x64 - a.sqrt() * MU)
        out = x0 if self.prediction == "x0" else (a.sqrt() * x64 - x0) / (1 - a).sqrt()  # v
        return out.float()


@pytest.mark.parametrize("prediction", ["v", "x0"])
@pytest.mark.parametrize("name,options", [(name, {}) for name in SAMPLERS] + [("ddim", {"spacing": "trailing"})])
def test_sampling_from_zero_snr_gives_the_data_s_mean_and_variance(name, options, prediction):
    diffusion = Diffusion(schedule("linear", timesteps=1000, zero_terminal_snr=True))
    denoise = make_denoise_fn(DiffusionModel(Oracle(diffusion, prediction), prediction=prediction), diffusion)
    seen = []
    x_T = torch.randn(2048, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    x = registry().get("sampler", name).factory(
        denoise, diffusion, x_T, steps=FEW_STEPS.get(name, STEPS), generator=torch.Generator().manual_seed(1),
        callback=lambda info: seen.append((info["t"], info["x0"])), **options)
    assert seen[0][0] == 999  # the first step is at alpha-bar = 0 ...
    assert torch.isfinite(seen[0][1]).all() and torch.isfinite(x).all()
    torch.testing.assert_close(seen[0][1], torch.full_like(x, MU))  # ... where E[x0 | x_T] is the data mean
    assert float(x.mean()) == pytest.approx(MU, abs=0.01)
    assert float(x.std()) == pytest.approx(S, rel=0.04)


def test_a_noise_prediction_cannot_start_from_zero_snr():
    diffusion = Diffusion(schedule("linear", timesteps=100, zero_terminal_snr=True))
    with pytest.raises(ValueError, match="zero terminal SNR"):
        denoise = make_denoise_fn(DiffusionModel(Net(Oracle(diffusion, "v")), prediction="eps"), diffusion)
        registry().get("sampler", "ddim").factory(denoise, diffusion, torch.zeros(1, 1, 2, 2))


class Net(torch.nn.Module):
    """A denoiser whose output is the Oracle's, through the DiffusionModel path (fast and plain)."""

    cond_dim = None

    def __init__(self, oracle: Oracle):
        super().__init__()
        self.oracle, self.scale = oracle, torch.nn.Parameter(torch.ones(()))

    def forward(self, x, t, cond=None):
        return self.scale * self.oracle(x, t)


def test_the_fast_denoise_function_gives_the_same_x0_at_zero_snr():
    from gentool.sampling import make_fast_denoise_fn

    diffusion = Diffusion(schedule("linear", timesteps=50, zero_terminal_snr=True))
    model = DiffusionModel(Net(Oracle(diffusion, "v")), prediction="v").eval()
    x = torch.randn(3, 1, 2, 2)
    for t in (49, torch.full((3,), 49)):  # one time for the batch, or a time per image
        plain = make_denoise_fn(model, diffusion)(x, t)
        fast = make_fast_denoise_fn(model, diffusion, compile=False, bf16=False, channels_last=False)(x, t)
        torch.testing.assert_close(plain.x0, fast.x0)
        torch.testing.assert_close(plain.eps, fast.eps)
        torch.testing.assert_close(fast.x0, torch.full_like(x, MU))  # E[x0 | x_T] at SNR 0 is the data mean
        torch.testing.assert_close(fast.eps, x)  # and the noise is all of x_T
