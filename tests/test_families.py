"""One data distribution through every family: VP (the DDPM chain), VE, EDM and flow matching.

On Gaussian data N(0, S^2) the exact denoiser is known for every process
(x0 = alpha S^2 x / v, eps = sigma x / v with v = alpha^2 S^2 + sigma^2), and
the probability-flow ODE maps a start x_T = z sqrt(v_T) to x_0 = S z whatever
the process. So the same z must give the same images through every process
(up to discretisation), stochastic samplers must give the data's moments
(within sampling error), and every parameterisation of the one exact
denoiser must give the same x0 (to float64 rounding).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import gentool
from gentool import Diffusion
from gentool.testing import DATA_STD, gaussian_denoise_fn

pytestmark = pytest.mark.usefixtures("one_thread")


def factory(kind: str, name: str):
    return gentool.registry().get(kind, name).factory


def processes() -> dict:
    return {"vp": Diffusion(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)),
            "ve": factory("process", "ve")(), "edm": factory("process", "edm")(), "flow": factory("process", "flow")()}


def start(process, z: torch.Tensor) -> torch.Tensor:
    """x_T with the marginal's own scale, sqrt(alpha^2 S^2 + sigma^2) at t_max, for standard normal z."""
    a, s = float(process.alpha(process.t_max)), float(process.sigma(process.t_max))
    return z * math.sqrt(a**2 * DATA_STD**2 + s**2)


@pytest.mark.parametrize("sampler, steps, options", [
    ("heun", 100, {}), ("dpmpp_2m", 100, {"clip_denoised": False}), ("euler", 800, {}),
])
def test_the_same_noise_gives_the_same_images_through_every_process(sampler, steps, options):
    z = torch.randn(256, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = {name: factory("sampler", sampler)(gaussian_denoise_fn(p), p, start(p, z), steps=steps,
                                             spacing="karras", **options)
           for name, p in processes().items()}
    for name, x in out.items():
        assert float((x - DATA_STD * z).abs().max()) < 0.01, (sampler, name)  # the exact ODE solution: S z


@pytest.mark.parametrize("sampler, options", [("euler_ancestral", {}), ("dpmpp_2m_sde", {}),
                                              ("heun", {"s_churn": 30.0}), ("ancestral", {"clip_denoised": False})])
def test_stochastic_samplers_give_the_data_s_moments_on_every_process(sampler, options):
    n = 16384
    z = torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for name, p in processes().items():
        x = factory("sampler", sampler)(gaussian_denoise_fn(p), p, start(p, z), steps=400, spacing="karras",
                                        generator=torch.Generator().manual_seed(2), **options)
        mean, std = float(x.mean()), float(x.std())
        assert abs(mean) < 4 * DATA_STD / math.sqrt(n), (sampler, name, mean)  # 4 standard errors
        # 4 standard errors of the std, plus 0.01 of first-order discretisation (Euler-ancestral on the chain's
        # sigmas loses 0.008 at 400 steps, as k-diffusion's does: tests/plugins/test_edm.py)
        assert abs(std - DATA_STD) < 4 * DATA_STD / math.sqrt(2 * n) + 0.01, (sampler, name, std)


# -- one denoiser, every parameterisation ----------------------------------------------

def exact(process, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    if isinstance(process, Diffusion):
        abar = float(process.alphas_cumprod_64[int(t)])
        a, s = math.sqrt(abar), math.sqrt(1 - abar)
    else:
        a, s = float(process.alpha(t)), float(process.sigma(t))
    v = a**2 * DATA_STD**2 + s**2
    return a * DATA_STD**2 * x / v, s * x / v, a, s


def outputs(process, x, t, x0, eps, a, s) -> dict:
    """What each parameterisation's network outputs for the exact (x0, eps), from each paper's definition."""
    out = {"eps": eps, "x0": x0, "v": a * eps - s * x0}  # Ho et al.; Salimans and Ho 2022
    if hasattr(process, "derivatives") and not isinstance(process, Diffusion):
        da, ds = (float(d) for d in process.derivatives(t))
        out["velocity"] = da * x0 + ds * eps  # Lipman et al. 2022: u = alpha' x0 + sigma' eps
    if a == 1.0:  # Karras et al. 2022, eq. 8 with Table 1: F = (x0 - c_skip x) / c_out, sigma_data 0.5
        c_skip, c_out = 0.25 / (s**2 + 0.25), s * 0.5 / math.sqrt(s**2 + 0.25)
        out["edm"] = (x0 - c_skip * x) / c_out
    return out


def parameterisations() -> dict:
    from gentool.parameterisation import CLASSIC

    reg = gentool.registry()
    return {**CLASSIC, "velocity": reg.get("objective", "flow_matching").factory().parameterisation,
            "edm": reg.get("objective", "edm").factory(sigma_data=0.5).parameterisation}


@pytest.mark.parametrize("name", ["vp", "ve", "edm", "flow"])
def test_one_exact_denoiser_gives_the_same_x0_through_every_parameterisation(name):
    process = processes()[name]
    params = parameterisations()
    x = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    times = [10, 500, 999] if name == "vp" else [process.time_at(f) for f in (0.05, 0.5, 0.95)]
    checked = set()
    for t in times:
        x0, eps, a, s = exact(process, x, t)
        for pname, out in outputs(process, x, t, x0, eps, a, s).items():
            if params[pname].check(process):
                continue  # refused for this process (eps where alpha = 0 at t_max)
            d = params[pname].denoised(process, x, t, out)
            # the chain converts with the DDPM core's float32 tables (kept bit for bit: tests/test_golden.py)
            tol = 2e-5 if name == "vp" else 1e-10
            torch.testing.assert_close(d.x0, x0, rtol=tol, atol=tol, msg=f"{pname} on {name} at t={t}")
            torch.testing.assert_close(d.eps, eps, rtol=tol, atol=tol, msg=f"{pname} on {name} at t={t}")
            checked.add(pname)
    assert {"x0", "v"} <= checked and len(checked) >= 3


def test_bits_per_dim_and_the_diffusers_export_of_a_non_chain_run_are_one_line(tmp_path):
    """Issue 23's outsider: bits/dim of an EDM model read 26.4 with no warning and its diffusers export claimed
    `epsilon`. Both are the discrete chain's; for any other process they are refused before any work."""
    from typer.testing import CliRunner

    import gentool
    from gentool.cli import app

    import tomllib

    data = tomllib.loads((Path(__file__).parents[1] / "recipes" / "fashion_mnist_edm.toml").read_text())
    data["data"] = {"name": "toy", "n": 8, "image_size": 28}
    data["run"]["output_dir"], data["tasks"] = tmp_path.as_posix(), []
    data["train"] |= {"steps": 1, "batch_size": 4, "preview_every": 0}
    recipe = gentool.load_recipe(data=data)
    run = gentool.build(recipe, device="cpu")
    gentool.train(run, progress=False, log=lambda m: None)
    runner = CliRunner()
    for args in (["eval", str(run.run_dir), "--metrics", "fid,bpd", "--n", "10"],
                 ["export", str(run.run_dir), "--format", "diffusers", "-o", str(tmp_path / "out")]):
        result = runner.invoke(app, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and lines[-1].startswith("error:") and "'edm'" in lines[-1], result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
