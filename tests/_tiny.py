"""Tiny recipes, runs and stand-in models shared by the tests (the fixtures over them live in conftest.py).

Every toy recipe of the suite is written by :func:`recipe_text`: 1x8x8 toy
data, a linear schedule of T = 50 and the same small U-Net; the callers
differ only in their [run], [data] and [train] lines and in what follows.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

import gentool

UNET = """in_channels = 1
image_size = 8
channels = 32
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = [4]
dropout = {dropout}
class_cond = {class_cond}"""


def unet_one_level(in_channels: int = 1, image_size: int = 28) -> str:
    """The [denoiser] lines of a one-level U-Net without attention (for recipes on real data's image size)."""
    return f"""in_channels = {in_channels}
image_size = {image_size}
channels = 32
channel_mult = [1]
num_res_blocks = 1
attention_resolutions = []
dropout = 0.0"""


#: The 28x28 grey one-level U-Net of the evaluation tests (the size gentool-cnn28 scores); ``class_cond`` follows.
UNET28 = unet_one_level()

CONDITIONER = """[conditioner]
name = "class_embedding"
num_classes = 2
p_uncond = 0.2"""


def recipe_text(out: str, *, name: str, train: str, run: str = "", data: str = "n = 64\nimage_size = 8",
                data_name: str = "toy", timesteps: int = 50, denoiser: str = "unet",
                denoiser_options: str | None = None, dropout: float = 0.0, class_cond: bool = False,
                tail: str = "") -> str:
    """A toy recipe's TOML, its run directory ``<out>/<name>``.

    ``run``, ``data`` and ``train`` are the lines of those tables (``data_name``
    another data source, e.g. with :func:`unet_one_level`); ``tail``
    follows [train] (a [sampler], [[tasks]]). A class-conditional U-Net gets
    :data:`CONDITIONER`. ``out`` may be ``"{out}"`` for a template to format.
    """
    if denoiser_options is None:
        denoiser_options = UNET.format(dropout=dropout, class_cond=str(class_cond).lower())
    conditioner = f"\n{CONDITIONER}\n" if class_cond else ""
    return f"""
[run]
name = "{name}"
{run}
output_dir = "{out}"

[data]
name = "{data_name}"
{data}

[schedule]
name = "linear"
timesteps = {timesteps}

[denoiser]
name = "{denoiser}"
{denoiser_options}
{conditioner}
[train]
{train}

{tail}
"""


def write_recipe(tmp_path: Path, *, name: str = "toy", steps: int = 6, checkpoint_every: int = 2,
                 log_every: int = 2, train: str = "", denoiser: str = "unet", denoiser_options: str | None = None,
                 dropout: float = 0.0, class_cond: bool = False, file: str | None = None) -> Path:
    """The engine tests' toy recipe (seed 3, AdamW with warm-up, an EMA of 0.9, 4 sampling steps).

    Written to ``tmp_path/<file or name.toml>``, its run directory ``tmp_path/runs/<name>``;
    ``train`` adds lines after [train]'s (a table of its own may follow).
    """
    text = recipe_text((tmp_path / "runs").as_posix(), name=name, run="seed = 3", denoiser=denoiser,
                       denoiser_options=denoiser_options, dropout=dropout, class_cond=class_cond,
                       train=f"steps = {steps}\nbatch_size = 8\nlr = 1e-3\nwarmup_steps = 2\nema_decay = 0.9\n"
                             f"checkpoint_every = {checkpoint_every}\nlog_every = {log_every}\n{train}",
                       tail="[sampler]\nsteps = 4")
    path = tmp_path / (file or f"{name}.toml")
    path.write_text(text, encoding="utf-8")
    return path


TRAINED_TOY = dict(steps=2, checkpoint_every=2, class_cond=True)
"""The :func:`write_recipe` options of the session's shared trained run (the ``trained_toy`` fixture)."""


def build(recipe: Path, *overrides: str) -> gentool.Run:
    return gentool.build(gentool.load_recipe(recipe, overrides=list(overrides)), device="cpu")


def quiet_train(run, **kwargs):
    messages: list[str] = []
    result = gentool.train(run, progress=False, log=messages.append, **kwargs)
    return result, messages


@contextmanager
def single_thread():
    """Torch on one thread: tiny networks run fastest so, the float sums are the same, a busy machine is spared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a run directory at ``dest`` (run directories are relocatable), for a test that changes it."""
    shutil.copytree(run_dir, dest)
    return dest


M = 0.5  # the two-point data set: every image is -M or +M in every pixel


class TwoPoints(nn.Module):
    """The optimal eps for x0 = +-M in every pixel, equally likely (E[x0|x_t] = M tanh(sqrt(abar) M sum x_t / (1-abar)))."""

    prediction, cond_dim = "eps", None

    def __init__(self, abar: torch.Tensor):
        super().__init__()
        self.abar = abar

    def forward(self, x, t, cond=None):
        a = self.abar[t].reshape(-1, 1, 1, 1)
        x0 = M * torch.tanh(a.sqrt() * M * x.double().sum((1, 2, 3), keepdim=True) / (1 - a))
        return ((x.double() - a.sqrt() * x0) / (1 - a).sqrt()).to(x.dtype)


def gaussian_eps(diffusion, mu: float, s: float):
    """The exact noise prediction for data x0 ~ N(mu, s^2) per pixel (the analytic Gaussian).

    E[x0 | x_t] = mu + sqrt(a) s^2 / (a s^2 + 1 - a) (x_t - sqrt(a) mu) with a = alpha-bar_t, and
    E[eps | x_t] = (x_t - sqrt(a) E[x0 | x_t]) / sqrt(1 - a); computed in float64.
    """
    abar = diffusion.alphas_cumprod_64

    def eps_fn(x, t):
        a = abar[t].reshape(-1, 1, 1, 1)
        x0 = mu + a.sqrt() * s**2 / (a * s**2 + 1 - a) * (x.double() - a.sqrt() * mu)
        return ((x.double() - a.sqrt() * x0) / (1 - a).sqrt()).to(x.dtype)

    return eps_fn


def solver_samplers(process) -> list[str]:
    """The registered samplers that solve the reverse process of ``process`` given any denoiser: those it supports,
    less those that need a particular kind of model (``fits_objective``: a consistency sampler)."""
    reg = gentool.registry()
    out = []
    for name in reg.names("sampler"):
        factory = reg.get("sampler", name).factory
        if getattr(factory, "fits_objective", None) is None and \
                getattr(factory, "supports", lambda p: None)(process) is None:
            out.append(name)
    return out
