"""The ``interpolate`` task: slerp, Ho et al. sec. 4.3, and end points that are the inputs' decodings."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny import M
from PIL import Image

from gentool.testing import check_task

from gentool_tasks.interpolate import decode_frames, interpolate, interpolate_latent, slerp

pytestmark = pytest.mark.usefixtures("one_thread")
# task_run (conftest): an untrained class-conditional tiny run (T = 20) with a perturbed output layer


def test_slerp_of_orthogonal_vectors_is_the_circle():
    a = torch.tensor([[3.0, 0.0]])
    b = torch.tensor([[0.0, 3.0]])
    for lam in (0.0, 0.25, 0.5, 1.0):
        want = 3 * torch.tensor([[math.cos(lam * math.pi / 2), math.sin(lam * math.pi / 2)]])
        assert torch.allclose(slerp(a, b, lam), want, atol=1e-6)


def test_slerp_end_points_are_exact_and_parallel_inputs_fall_back_to_lerp():
    a, b = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-6)


def test_latent_end_points_are_the_decodings_of_the_inputs(task_run):
    # Ho et al. 4.3 with t = 0.5 of T = 20: both images noised through 10 steps (0-based step 9)
    x_a, x_b = torch.rand(2, 2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = torch.randn(x_a.shape, generator=torch.Generator().manual_seed(1))
    frames = interpolate_latent(task_run, x_a, x_b, [0.0, 0.5, 1.0], 0.5, noise=noise, generator=task_run.generator(7))
    abar9 = float(torch.cumprod(1 - torch.linspace(1e-3, 0.3, 20, dtype=torch.float64), 0)[9])
    for x, frame in ((x_a, frames[0]), (x_b, frames[-1])):
        x_t = abar9**0.5 * x + (1 - abar9) ** 0.5 * noise  # eq. 4, written out
        decoded = task_run.sample(x_T=x_t, t_start=9, generator=task_run.generator(7), progress=False)
        assert torch.allclose(frame, decoded, atol=1e-5)
    assert not torch.allclose(frames[1], frames[0]) and not torch.allclose(frames[1], frames[2])


def test_slerp_end_points_are_the_decodings_of_the_seeds(task_run):
    z_a, z_b = task_run.noise(2, task_run.generator(10)), task_run.noise(2, task_run.generator(11))
    starts = [slerp(z_a, z_b, lam) for lam in (0.0, 0.5, 1.0)]
    frames = decode_frames(task_run, starts, task_run.diffusion.num_timesteps - 1, task_run.generator(3))
    for z, frame in ((z_a, frames[0]), (z_b, frames[-1])):
        assert torch.allclose(frame, task_run.sample(x_T=z, generator=task_run.generator(3), progress=False), atol=1e-5)


def test_two_point_data_decodes_each_end_to_its_own_image(two_point_run):  # conftest: the exact denoiser
    run = two_point_run
    x_a, x_b = torch.full((4, 1, 8, 8), -M), torch.full((4, 1, 8, 8), M)
    noise = torch.randn(x_a.shape, generator=torch.Generator().manual_seed(2))
    frames = interpolate_latent(run, x_a, x_b, [0.0, 0.25, 0.75, 1.0], 0.5, noise=noise, generator=run.generator(0))
    assert (frames[0] - x_a).abs().max() < 0.02 and (frames[1] - x_a).abs().max() < 0.02
    assert (frames[3] - x_b).abs().max() < 0.02 and (frames[2] - x_b).abs().max() < 0.02


def test_t_zero_mixes_pixels(task_run):
    x_a, x_b = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    frames = interpolate_latent(task_run, x_a, x_b, [0.0, 0.25, 1.0], 0.0, noise=torch.randn(1, 1, 8, 8),
                                generator=task_run.generator(0))
    assert torch.equal(frames[1], torch.full((1, 1, 8, 8), 0.25))


@pytest.mark.parametrize("options", [
    {"mode": "latent", "frames": 4, "indices": [0, 1, 2, 3], "steps": 5},
    {"mode": "slerp", "frames": 3, "rows": 2, "label": 1},
])
def test_task_writes_a_strip_and_a_gif_with_one_frame_per_lambda(task_run, tmp_path, options):
    result = check_task(interpolate, task_run, out_dir=tmp_path, **options)
    names = {f.name for f in result.files}
    assert {"interpolation.png", "interpolation.gif"} <= names
    with Image.open(tmp_path / "interpolation.gif") as gif:
        assert gif.n_frames == options["frames"]
    with Image.open(tmp_path / "interpolation.png") as strip:  # rows x frames cells of 8 px, 2 px padding
        rows = 2
        assert strip.size == (2 + 10 * options["frames"], 2 + 10 * rows)


def test_latent_inputs_come_in_pairs(task_run, tmp_path):
    with pytest.raises(ValueError, match="pairs"):
        interpolate(task_run, tmp_path, indices=[0, 1, 2])


class Subspace(torch.nn.Module):
    """The exact eps of data x0 = sigma U z, z ~ N(0, I_k): image-like, a few strong directions in many pixels.

    E[x0 | x_t] = sqrt(abar) sigma^2 / (abar sigma^2 + 1 - abar) U U^T x_t (Gaussian conditioning), so
    eps = (x_t - sqrt(abar) E[x0 | x_t]) / sqrt(1 - abar): the model a perfect training run converges to.
    """

    prediction, cond_dim = "eps", None

    def __init__(self, abar: torch.Tensor, basis: torch.Tensor, sigma: float):
        super().__init__()
        self.abar, self.basis, self.sigma = abar, basis, sigma

    def forward(self, x, t, cond=None):
        a = self.abar[t].reshape(-1, 1)
        flat = x.double().flatten(1)
        x0 = (a.sqrt() * self.sigma**2 / (a * self.sigma**2 + 1 - a)) * (flat @ self.basis) @ self.basis.T
        return ((flat - a.sqrt() * x0) / (1 - a).sqrt()).reshape(x.shape).to(x.dtype)


SIGMA = 5.0


@pytest.fixture(scope="module")
def subspace_run(tmp_path_factory):
    """A tiny unconditional run with the recipe's schedule (linear, T = 1000) and the optimal model of subspace data."""
    from gentool.model import DiffusionModel
    from gentool.testing import tiny_run

    run = tiny_run(tmp_path_factory.mktemp("subspace"), conditional=False, timesteps=1000)
    run.recipe.schedule.options.update(beta_start=1e-4, beta_end=0.02)
    run.process = type(run.process)(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    # 28x28 images with 4 strong directions of standard deviation 5: pixels of standard deviation 0.36, inside [-1, 1]
    basis, _ = torch.linalg.qr(torch.randn(784, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    run.model, run.ema = DiffusionModel(Subspace(run.diffusion.alphas_cumprod_64, basis, sigma=SIGMA)), None
    return run, basis


def recipe_interpolation_t() -> float:
    import tomllib
    from pathlib import Path

    recipe = tomllib.loads((Path(__file__).parents[2] / "recipes" / "fashion_mnist.toml").read_text())
    return next(task["t"] for task in recipe["tasks"] if task["name"] == "interpolate")


def end_frame_errors(run, basis, t: float) -> torch.Tensor:
    """||end frame - input|| / ||input|| for four pairs of data images, the recipe's 50 sampling steps."""
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = (SIGMA * z @ basis.T).float().reshape(8, 1, 28, 28)
    x_a, x_b = x[0::2], x[1::2]
    noise = torch.randn(x_a.shape, generator=torch.Generator().manual_seed(2))
    frames = interpolate_latent(run, x_a, x_b, [0.0, 0.5, 1.0], t, noise=noise, generator=run.generator(3), steps=50)
    ends = torch.cat([frames[0] - x_a, frames[-1] - x_b]).flatten(1).norm(dim=1)
    return ends / torch.cat([x_a, x_b]).flatten(1).norm(dim=1)


def test_the_recipes_t_reconstructs_the_inputs_where_ho_et_als_does_not(subspace_run):
    run, basis = subspace_run
    t = recipe_interpolation_t()
    assert t <= 0.25
    errors = end_frame_errors(run, basis, t)
    far = end_frame_errors(run, basis, 0.5)  # Ho et al.'s t = 500 of 1000: new images
    # measured: 0.24 on average (0.12 to 0.44) at t = 0.2, 0.66 at t = 0.5; a perfect model still draws from
    # p(x0 | x_t), whose spread around the input grows with t
    assert errors.mean() < 0.3, errors  # the end frames are their inputs, to a quarter of their norm
    assert far.mean() > 0.5 and far.mean() > 2 * errors.mean(), (errors, far)


def test_slerp_decodes_with_ddim_eta_0_unless_told_otherwise(task_run, tmp_path):
    def strip(name: str, **options) -> torch.Tensor:
        interpolate(task_run, tmp_path / name, mode="slerp", frames=3, label=1, steps=5, **options)
        with Image.open(tmp_path / name / "interpolation.png") as image:
            return torch.tensor(list(image.getdata()), dtype=torch.float32)

    # deterministic: the sampler's seed changes nothing, the frames differ only through their start noise
    assert torch.equal(strip("a", seed=1), strip("b", seed=2))
    assert not torch.equal(strip("c", sampler="ancestral", seed=1), strip("d", sampler="ancestral", seed=2))
    z = task_run.noise(1, task_run.generator(0))
    ddim = task_run.sample(x_T=z, labels=[1], steps=5, sampler="ddim", sampler_options={"eta": 0.0},
                           generator=task_run.generator(5), progress=False)
    frames = decode_frames(task_run, [z], task_run.diffusion.num_timesteps - 1, task_run.generator(6),
                           labels=[torch.tensor([1])], steps=5, sampler="ddim", sampler_options={"eta": 0.0})
    assert torch.allclose(frames[0], ddim, atol=1e-5)
