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
