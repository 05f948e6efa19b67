"""gentool: a plugin-based toolbox for denoising diffusion models.

Timestep convention: 0-based. gentool's ``t`` in ``0..T-1`` is Ho et al.'s
``t + 1``; see :mod:`gentool.diffusion`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@gentool.hookimpl``.
hookimpl = pluggy.HookimplMarker("gentool")

from gentool.interfaces import (  # noqa: E402
    Conditioner,
    DataSource,
    Denoiser,
    EpsFn,
    Logger,
    Objective,
    Sampler,
    Schedule,
    Task,
    TaskResult,
)

from gentool.diffusion import Diffusion  # noqa: E402
from gentool.model import DiffusionModel  # noqa: E402
from gentool.recipe import Recipe, RecipeError, load_recipe  # noqa: E402
from gentool.run import Run, build  # noqa: E402
from gentool.api import load_run  # noqa: E402
from gentool.sampling import guided_eps, make_eps_fn  # noqa: E402


def train(run, **kwargs):
    """Train a built :class:`Run` per its recipe (see :func:`gentool.engine.train.train`)."""
    from gentool.engine.train import train as _train

    return _train(run, **kwargs)


def run_recipe(path, **kwargs):
    """Validate, build, train and run the tasks of a recipe file, like ``gentool run``."""
    from gentool.api import run_recipe as _run_recipe

    return _run_recipe(path, **kwargs)


def registry():
    """The registry of every loaded plugin's components."""
    from gentool.plugins import registry as _registry

    return _registry()


__all__ = [
    "Diffusion",
    "DiffusionModel",
    "Recipe",
    "RecipeError",
    "Run",
    "build",
    "guided_eps",
    "load_recipe",
    "load_run",
    "make_eps_fn",
    "registry",
    "run_recipe",
    "train",
    "Conditioner",
    "DataSource",
    "Denoiser",
    "EpsFn",
    "Logger",
    "Objective",
    "Sampler",
    "Schedule",
    "Task",
    "TaskResult",
    "__version__",
    "hookimpl",
]
