"""The distillation tests' rig: Gaussian data, a network linear in x with a time-dependent coefficient, and a
teacher that is that network set to the exact answer.

Data N(0, S^2) per pixel: x_t = alpha x_0 + sigma eps is Gaussian, so E[x_0 | x_t] and E[eps | x_t] are
linear in x_t (the coefficients of :func:`gentool.testing.gaussian_denoise_fn`), and so is every
parameterisation's output. :class:`Knots` computes out = a(c) x_in, a piecewise linear in the noise label c
between knots: set to the exact coefficient at each knot it is the exact teacher there, and the
same network, trained, is a student that can represent the exact few-step solution at its grid's times.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch
from torch import Tensor, nn

import gentool
from gentool import plugins

S = 0.5  # the data's standard deviation, per pixel


class Gaussian(torch.utils.data.Dataset):
    """``n`` images of N(0, S^2) pixels, no labels (-1)."""

    def __init__(self, n: int, shape: tuple[int, int, int], seed: int) -> None:
        self.x = S * torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], -1


def gaussian(split: str, *, n: int = 512, image_size: int = 4, channels: int = 1) -> Gaussian:
    """Gaussian pixels N(0, 0.25).

    Args:
        n: images per split.
        image_size: height and width.
        channels: channels.
    """
    return Gaussian(n, (channels, image_size, image_size), 0 if split == "train" else 1)


class Knots(nn.Module):
    """out = a(c) x_in with a piecewise linear in the noise label c between ``knots`` (zero-mean data: no offset)."""

    cond_dim = None

    def __init__(self, knots: list[float], image_size: int, channels: int) -> None:
        super().__init__()
        self.register_buffer("knots", torch.tensor(sorted(knots), dtype=torch.float64))
        self.a = nn.Parameter(torch.zeros(len(knots)))
        self.image_shape = (channels, image_size, image_size)

    def coefficient(self, c: Tensor) -> Tensor:
        k = self.knots
        if len(k) == 1:
            return self.a.expand(c.shape[0])
        hi = torch.searchsorted(k, c.double().contiguous()).clamp(1, len(k) - 1)
        lo = hi - 1
        w = ((c.double() - k[lo]) / (k[hi] - k[lo])).clamp(0, 1).float()
        return self.a[lo] * (1 - w) + self.a[hi] * w

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.coefficient(c_noise).reshape(-1, *[1] * (x.ndim - 1)) * x


def knots(*, knots: list[float] = [0.0, 1.0], image_size: int = 4, channels: int = 1) -> Knots:  # noqa: B006
    """The rig's network.

    Args:
        knots: the noise labels where a and b are free.
        image_size: height and width.
        channels: channels.
    """
    return Knots(knots, image_size, channels)


class RigPlugin:
    """The rig's components, registered in code."""

    @gentool.hookimpl
    def gentool_register_data_sources(self, register):
        register("gaussian", gaussian)

    @gentool.hookimpl
    def gentool_register_denoisers(self, register):
        register("knots", knots)


def install(*more: tuple[str, Any]) -> None:
    """The built-in plugins plus the rig's (and ``more``), as the process's plugins (undo: plugins.reset())."""
    plugins.reset(plugins.load_plugins(autoload=False, extra=[("distill_rig", RigPlugin()), *more]))


@pytest.fixture(autouse=True)
def rig():
    """The rig's plugins registered for the test (imported by a test module, autouse there), then reset."""
    install()
    yield
    plugins.reset()


def exact_coefficients(run, times: list[float]) -> tuple[list[float], list[float]]:
    """The noise labels of ``times`` and the exact network coefficient a there, for data N(0, S^2).

    E[x_0 | x_t] = alpha S^2 x_t / v and E[eps | x_t] = sigma x_t / v with v = alpha^2 S^2 + sigma^2; the
    parameterisation's target of those (affine in them) divided by its input scaling of x_t is a.
    """
    process, param = run.process, run.model.parameterisation
    dtype = torch.long if process.discrete else torch.float64
    t = torch.tensor(times, dtype=dtype)
    ones = torch.ones(len(times), 1, 1, 1, dtype=torch.float64)
    alpha = process.alpha(t).double().reshape(-1, 1, 1, 1)
    sigma = process.sigma(t).double().reshape(-1, 1, 1, 1)
    v = alpha**2 * S**2 + sigma**2
    out = param.target(process, alpha * S**2 / v * ones, sigma / v * ones, t).double()
    x_in, c_noise = param.inputs(process, ones, t)
    return c_noise.double().flatten().tolist(), (out / x_in.double()).flatten().tolist()


def set_exact(run, times: list[float]) -> None:
    """Make ``run``'s Knots network (and EMA) exact at ``times`` (which must be its knots)."""
    labels, a = exact_coefficients(run, times)
    for model in filter(None, (run.model, run.ema)):
        net = model.denoiser
        order = torch.tensor(labels, dtype=torch.float64).argsort()
        assert torch.allclose(net.knots, torch.tensor(labels, dtype=torch.float64)[order]), "knots != the times"
        with torch.no_grad():
            net.a.copy_(torch.tensor(a)[order])


def write(path: Path, data: dict) -> Path:
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def moments(x: Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std())


def close_to_data(x: Tensor, tol: float) -> bool:
    mean, std = moments(x)
    return abs(mean) < 0.03 and abs(std - S) < tol * S and math.isfinite(std)


def exact_consistency(sigma: float, sigma_min: float = 0.002) -> float:
    """The consistency function of data N(0, S^2) on x = x_0 + sigma eps: f(x, sigma) = x sqrt(eps^2 + S^2) /
    sqrt(sigma^2 + S^2) (the probability-flow ODE scales x by the marginal's standard deviation)."""
    return math.sqrt(sigma_min**2 + S**2) / math.sqrt(sigma**2 + S**2)


def gaussian_consistency_fn(process, std: float = S, counter: list[int] | None = None, sigma_min: float = 0.002):
    """``denoise(x_t, t) -> Denoised`` whose x0 is the exact consistency function of data N(0, std^2), on any
    alpha = 1 process (for the consistency sampler's contract check)."""
    from gentool import Denoised, as_batch

    def denoise(x_t: Tensor, t) -> Denoised:
        if counter is not None:
            counter[0] += 1
        sigma = process.sigma(as_batch(x_t, t, process)).double().reshape(-1, *[1] * (x_t.ndim - 1))
        f = x_t.double() * math.sqrt(sigma_min**2 + std**2) / (sigma**2 + std**2).sqrt()
        return Denoised(f.to(x_t.dtype), ((x_t.double() - f) / sigma).to(x_t.dtype))

    return denoise


#: the teachers of the contract checks: (process table, objective table) per distillation method
CONTRACT_TEACHERS = {
    "progressive": ({"name": "vp"}, {"name": "ddpm", "prediction": "v"}),
    "consistency": ({"name": "edm"}, {"name": "edm"}),
    "ect": ({"name": "edm"}, {"name": "edm"}),
    "reflow": ({"name": "flow"}, {"name": "flow_matching"}),
}
_TEACHERS: dict[str, str] = {}


def contract_teacher(method: str) -> dict[str, Any]:
    """Options of a distillation objective for :func:`gentool.testing.check_objective`: a tiny teacher trained one
    step with ``gentool.run_recipe`` (2 channels of 6x6, the check's batch), once a process, and its objective."""
    import tempfile

    process, objective = CONTRACT_TEACHERS[method]
    if method not in _TEACHERS:
        out = Path(tempfile.mkdtemp(prefix="gentool-teacher-"))
        data = {
            "run": {"name": method, "output_dir": out.as_posix(), "device": "cpu", "seed": 0},
            "data": {"name": "toy", "n": 8, "image_size": 6, "channels": 2},
            "process": process, "objective": objective,
            "denoiser": {"name": "unet", "in_channels": 2, "image_size": 6, "channels": 32, "channel_mult": [1],
                         "num_res_blocks": 1, "attention_resolutions": [], "dropout": 0.0},
            "train": {"steps": 1, "batch_size": 4, "checkpoint_every": 1, "preview_every": 0},
        }
        if process["name"] == "vp":
            data["schedule"] = {"name": "linear", "timesteps": 200}
        with torch.random.fork_rng(devices=[]):
            gentool.run_recipe(write(out / f"{method}.toml", data), run_tasks=False, progress=False,
                               log=lambda m: None)
        _TEACHERS[method] = (out / method).as_posix()
    options = {"teacher": _TEACHERS[method]}
    if method != "progressive":
        options["teacher_objective"] = objective
    return options
