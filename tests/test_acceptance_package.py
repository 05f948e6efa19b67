"""Issue 23's acceptance package: rectified flow and EDM as a third-party plugin, built-in samplers and tasks right.

``tests/acceptance/gentool-acceptance`` was written against the plugin API
(``from gentool import ...``) and docs/plugins.md alone: a process, an
objective with its own parameterisation and a sampler for each family, about
100 lines each. It is pip-installed into a temporary folder as a user would
install it. The tests train a tiny recipe of each through ``gentool run``,
then replace the network by the exact denoiser of Gaussian data N(MU, S^2)
(known in closed form for every process), in the network's own
parameterisation, and check gentool's built-in samplers, the package's own
sampler and the tasks against that known answer: sample moments within
sampling error, an inversion round trip, inpainting that keeps the known
pixels. ``gentool check`` refuses the mismatched combinations in one line.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import tomli_w
import torch
from torch import nn
from typer.testing import CliRunner

import gentool
from gentool import plugins
from gentool.cli import app
from _packages import installed_package, on_sys_path

PACKAGE = Path(__file__).parent / "acceptance" / "gentool-acceptance"
MU, S = 0.3, 0.5  # the analytic data: every pixel N(MU, S^2), independently
BUILTIN = ["ancestral", "ddim", "dpmpp_2m", "euler", "heun"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    with installed_package(PACKAGE, tmp_path_factory.mktemp("site"), "gentool_acceptance") as site:
        yield site


@pytest.fixture
def on_path(installed, monkeypatch):
    with on_sys_path(installed, monkeypatch) as site:
        yield site


FAMILIES = {
    "rf": {"process": {"name": "rf_path"}, "objective": {"name": "rf_velocity"}, "sampler": {"name": "rf_euler"}},
    "edm": {"process": {"name": "edm_sigma"}, "objective": {"name": "edm_loss"}, "sampler": {"name": "edm_heun"}},
}


def recipe(family: str, out: Path) -> dict:
    return {
        "run": {"name": family, "output_dir": out.as_posix(), "device": "cpu", "compile": False, "seed": 0},
        "data": {"name": "toy", "n": 16, "image_size": 8, "channels": 1},
        "denoiser": {"name": "unet", "in_channels": 1, "image_size": 8, "channels": 32, "channel_mult": [1],
                     "num_res_blocks": 1, "attention_resolutions": [], "dropout": 0.0},
        "train": {"steps": 3, "batch_size": 4, "checkpoint_every": 3},
        "tasks": [{"name": "sample", "n": 2, "steps": 4}],
        **FAMILIES[family],
    }


class Exact(nn.Module):
    """The exact network output for data N(MU, S^2) per pixel, in the run's parameterisation.

    From what the network is called with (x_in, c_noise) it recovers (x_t, t) through the parameterisation's
    ``inputs``, computes E[x0 | x_t] and E[eps | x_t] in float64 (x_t = a x0 + s eps is Gaussian), and returns
    what the parameterisation's ``target`` would be for them (the target is affine in x0 and eps).
    """

    cond_dim = None

    def __init__(self, run):
        super().__init__()
        self.process, self.param = run.process, run.model.parameterisation
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x_in, c_noise, cond=None):
        t = self._time(c_noise)
        x = self._x(x_in, t)
        a = self.process.alpha(t.double()).reshape(-1, 1, 1, 1)
        s = self.process.sigma(t.double()).reshape(-1, 1, 1, 1)
        var = a**2 * S**2 + s**2
        x0 = MU + a * S**2 / var * (x.double() - a * MU)
        eps = s / var * (x.double() - a * MU)
        return self.param.target(self.process, x0, eps, t.double()).to(x_in.dtype)

    def _time(self, c_noise):
        if self.param.name == "edm_precond":
            return (4 * c_noise.double()).exp()  # c_noise = ln(sigma) / 4
        return c_noise.double() / 1000 * self.process.t_max  # noise_label = 1000 t / t_max

    def _x(self, x_in, t):
        if self.param.name == "edm_precond":
            return x_in.double() * (t.double() ** 2 + 0.5**2).sqrt().reshape(-1, 1, 1, 1)  # x = x_in / c_in
        return x_in


def exact_run(family: str, tmp: Path):
    """A tiny recipe of the family trained 3 steps with gentool run, then its network replaced by the exact one."""
    path = tmp / f"{family}.toml"
    path.write_text(tomli_w.dumps(recipe(family, tmp)), encoding="utf-8")
    result = gentool.run_recipe(path, progress=False, log=lambda m: None)
    run = result.run
    assert run.step == 3 and (run.run_dir / "sample" / "grid.png").is_file()
    assert type(run.model.parameterisation).__module__.startswith("gentool_acceptance")
    run = gentool.load_run(run.run_dir, device="cpu")  # and it reloads from its run directory
    exact = Exact(run)
    run.model.denoiser = exact
    if run.ema is not None:
        run.ema.denoiser = exact
    return run


def moments_ok(x: torch.Tensor, what: str, tol: float = 0.05) -> None:
    mean, std = float(x.mean()), float(x.std())
    assert abs(mean - MU) < 0.03 and abs(std - S) < tol * S, f"{what}: mean {mean:.3f}, std {std:.3f}"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_package_trains_and_every_builtin_sampler_samples_its_data(on_path, tmp_path, family):
    run = exact_run(family, tmp_path)
    n = 2048
    own = run.sample(n, steps=200 if family == "rf" else 40, progress=False)  # its own sampler (the recipe's)
    moments_ok(own, f"{family}: its own sampler")
    for name in BUILTIN:
        steps = 40 if name in ("heun", "dpmpp_2m") else 200  # the first-order solvers converge slowly here
        options = {} if name in ("euler", "heun") else {"clip_denoised": False}
        if family == "edm" and name in ("ancestral", "ddim"):
            options["spacing"] = "karras"  # EDM's time is sigma: evenly in it wastes the steps at large sigma
        x = run.sample(n, sampler=name, steps=steps, progress=False, sampler_options=options)
        moments_ok(x, f"{family}: {name}")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_inversion_round_trip_and_tasks_on_the_package_processes(on_path, tmp_path, family):
    from gentool import ddim_invert

    run = exact_run(family, tmp_path)
    x0 = MU + S * torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    spacing = "karras" if family == "edm" else "uniform"
    # the probability-flow ODE maps Gaussian data affinely: x_T = a MU + (x0 - MU) sqrt(a^2 S^2 + s^2) / S
    a, s = float(run.process.alpha(run.process.t_max)), float(run.process.sigma(run.process.t_max))
    exact = a * MU + (x0 - MU) * math.sqrt(a**2 * S**2 + s**2) / S
    errors = []
    for steps in (100, 400):
        latents = ddim_invert(run.denoise_fn(), run.process, x0, steps=steps, spacing=spacing)
        back = run.sample(x_T=latents, sampler="ddim", steps=steps, progress=False,
                          sampler_options={"clip_denoised": False, "spacing": spacing})
        errors.append((float((back - x0).abs().max()), float(((latents - exact) / exact.abs().max()).abs().max())))
    (recon100, latent100), (recon400, latent400) = errors
    assert recon400 < 0.35 * recon100 and latent400 < 0.35 * latent100, errors  # DDIM is first order: 4x steps
    # EDM's Karras grid is coarse where sigma is large (80 -> 60 in one step at 100 steps): DDIM's first-order
    # error there is a few per cent of the latents' spread (+-160); the flow's uniform grid is finer throughout
    assert recon400 < (0.2 if family == "edm" else 0.05) and latent400 < (0.1 if family == "edm" else 0.02), errors
    from gentool_tasks.inpaint import inpaint_images
    from gentool_tasks.masks import make_mask

    known = make_mask(64, (8, 8), mask="centre", fraction=0.25)
    filled = inpaint_images(run, x0, known, sampler="ddim", steps=100, progress=False,
                            sampler_options={"clip_denoised": False, "spacing": spacing})
    assert torch.equal(filled * known, x0 * known) and torch.isfinite(filled).all()
    hole = filled[(1 - known).expand_as(filled).bool()]
    assert abs(float(hole.mean()) - MU) < 0.05 and abs(float(hole.std()) - S) < 0.1 * S  # independent pixels
    result = run.run_task(gentool.ComponentSpec("variations", {"t": 0.5, "n": 2, "steps": 10, "indices": [0, 1]}),
                          tmp_path / "variations")
    assert result.files and math.isfinite(result.metrics["mse_to_input"])


@pytest.mark.parametrize("objective, process, builtin_sampler", [
    ("rf_velocity", "edm_sigma", None),
    ("edm_loss", "rf_path", None),
    ("ddpm", "rf_path", None),  # eps prediction where alpha reaches 0 at t = 1
])
def test_check_refuses_what_does_not_fit_in_one_line(on_path, tmp_path, objective, process, builtin_sampler):
    data = recipe("rf", tmp_path)
    data["process"], data["objective"] = {"name": process}, {"name": objective}

    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.output
    assert process in lines[0] and (objective in lines[0] or "'eps'" in lines[0]), lines[0]


def test_a_sampler_written_for_the_ddpm_chain_is_refused_on_a_flow(on_path, tmp_path):
    """A sampler of the eps_fn convention (written for the discrete chain) named with a flow process: one line."""
    def old_ddim(eps_fn, diffusion, x_T, *, steps=None, t_start=None, generator=None, callback=None):
        """An old-style sampler."""
        return x_T

    reg = plugins.registry()
    reg.add("sampler", "old_style", old_ddim, "test")
    data = recipe("rf", tmp_path)
    data["sampler"] = {"name": "old_style"}
    path = tmp_path / "old.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2 and "old_style" in result.output and "rf_path" in result.output, result.output
