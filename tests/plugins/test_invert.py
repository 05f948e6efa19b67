"""DDIM inversion (Song et al. 2020, sec. 4.3): the maths on Gaussian data, the ``invert`` task and command.

On data N(MU, S^2) per pixel the exact noise prediction is known, and so is
the probability-flow ODE's map from x_0 to x_T: in y = x / sqrt(abar) and
sigma = sqrt((1 - abar) / abar) it is y_T = MU + (x_0 - MU) sqrt(S^2 + sigma_T^2) / S.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from gentool import Diffusion
from gentool.plugins import registry
from gentool.reverse import ddim_invert
from gentool.testing import denoise_from_eps
from gentool.testing import check_task
from _tiny import gaussian_eps as exact_gaussian_eps

pytestmark = pytest.mark.usefixtures("one_thread")
MU, S = 0.2, 0.3


def gaussian_eps(diffusion: Diffusion):
    """The exact noise prediction for x0 ~ N(MU, S^2) (tests/_tiny.py)."""
    return exact_gaussian_eps(diffusion, MU, S)


def invert_and_reconstruct(steps: int):
    diffusion = Diffusion(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    x0 = MU + S * torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = ddim_invert(denoise_from_eps(gaussian_eps(diffusion), diffusion), diffusion, x0, steps=steps)
    ddim = registry().get("sampler", "ddim").factory
    recon = ddim(denoise_from_eps(gaussian_eps(diffusion), diffusion), diffusion, x_T, steps=steps, clip_denoised=False)
    a_T = float(diffusion.alphas_cumprod_64[-1])
    sigma_T = ((1 - a_T) / a_T) ** 0.5
    exact = a_T**0.5 * (MU + (x0 - MU) * (S**2 + sigma_T**2) ** 0.5 / S)
    return float((recon - x0).abs().max()), float((x_T - exact).abs().max())


def test_inversion_then_reconstruction_returns_the_input_and_the_error_falls_with_the_steps():
    (r25, l25), (r50, l50), (r100, l100), (r400, l400) = map(invert_and_reconstruct, (25, 50, 100, 400))
    assert r25 > r50 > r100 > r400 and l25 > l50 > l100 > l400
    assert 1.6 < r50 / r100 < 2.5 and 1.6 < l50 / l100 < 2.5  # both ODE solvers are first order
    assert r100 < 0.08 and r400 < 0.02  # within the discretisation error
    assert l400 < 0.02  # the latent is the exact ODE's x_T


def test_the_task_writes_latents_that_slerp_interpolation_takes(task_run, tmp_path):
    result = check_task(registry().get("task", "invert").factory, task_run, out_dir=tmp_path / "inv",
                        indices=[0, 1, 2, 3], steps=5)
    assert {f.name for f in result.files} == {"latents.pt", "reconstruction.png"}
    assert set(result.metrics) == {"reconstruction_rmse", "reconstruction_max_error", "latent_std"}
    data = torch.load(tmp_path / "inv" / "latents.pt", weights_only=True)  # tensors only
    assert data["latents"].shape == (4, *task_run.image_shape) and data["labels"].shape == (4,)
    interpolate = registry().get("task", "interpolate").factory
    out = interpolate(task_run, tmp_path, mode="slerp", frames=3, latents=str(tmp_path / "inv" / "latents.pt"),
                      sampler="ddim", steps=5)
    assert (tmp_path / "interpolation.png") in out.files
    with pytest.raises(ValueError, match="pairs"):
        torch.save({"latents": data["latents"][:3]}, tmp_path / "three.pt")
        interpolate(task_run, tmp_path, mode="slerp", latents=str(tmp_path / "three.pt"))


def test_gentool_invert_reports_the_error_and_writes_the_latents(trained_toy_copy, tmp_path):
    from gentool.cli import app

    run_dir = next((tmp_path / "runs").iterdir())
    result = CliRunner().invoke(app, ["invert", str(run_dir), "--indices", "0,1", "--steps", "4", "-o",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "reconstruction_rmse = " in result.output and (tmp_path / "out" / "latents.pt").is_file()
    bad = CliRunner().invoke(app, ["invert", str(run_dir), "--indices", "a,b"])
    assert bad.exit_code == 2 and "--indices" in bad.output
