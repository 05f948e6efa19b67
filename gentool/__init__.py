"""gentool: a plugin-based toolbox for denoising diffusion models.

Timestep convention: 0-based. gentool's ``t`` in ``0..T-1`` is Ho et al.'s
``t + 1``; see :mod:`gentool.diffusion`.

``import gentool`` is cheap: ``hookimpl`` and ``__version__`` are defined
here, and every other public name (``Diffusion``, ``build``, ``Run``, ...) is
imported from its module on first use (PEP 562 ``__getattr__``), so a plugin
that only needs ``@gentool.hookimpl``, and ``gentool --help``, import no torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@gentool.hookimpl``.
hookimpl = pluggy.HookimplMarker("gentool")

#: The plugin API: every name a plugin (built-in or not) may import, ``from gentool import NAME``.
#: public name -> the module that defines it (or (module, attribute) where the name differs), imported on
#: first use. An import-linter contract keeps the built-in plugins to these names (docs/plugins.md).
_LAZY: dict[str, str | tuple[str, str]] = {
    # the kinds' protocols and what a task returns (gentool/interfaces.py)
    **dict.fromkeys(["Autoencoder", "Conditioner", "DataSource", "DenoiseFn", "Denoiser", "EpsFn", "Logger",
                     "Objective", "RunLike", "Sampler", "Schedule", "StepCallback", "Task", "TaskResult"],
                    "gentool.interfaces"),
    # the noise process (gentool/process.py) and the discrete chain (gentool/diffusion.py)
    **dict.fromkeys(["ContinuousProcess", "Process", "as_batch", "karras_sigmas"], "gentool.process"),
    **dict.fromkeys(["Diffusion", "extract", "normal_kl", "rescale_zero_terminal_snr"], "gentool.diffusion"),
    # what the network outputs (gentool/parameterisation.py)
    **dict.fromkeys(["Affine", "Denoised", "EpsPrediction", "Parameterisation", "VPrediction", "X0Prediction",
                     "call_network", "guided_eps", "parameterisation_of"], "gentool.parameterisation"),
    # the samplers' toolkit (gentool/reverse.py) and the variational bound (gentool/vlb.py)
    **dict.fromkeys(["Spacing", "ancestral_step", "churn_time", "coefficients", "data_time", "ddim_invert",
                     "ddim_update", "denoise_at", "karras_sigma", "learned_variance", "posterior", "renoise",
                     "reverse_loop"], "gentool.reverse"),
    **dict.fromkeys(["discretized_gaussian_log_likelihood", "interpolate_log_variance", "learned_log_variance",
                     "split_output", "vlb_term"], "gentool.vlb"),
    # sampling a run (gentool/sampling.py, gentool/service.py)
    **dict.fromkeys(["Guidance", "make_denoise_fn", "make_fast_denoise_fn"], "gentool.sampling"),
    **dict.fromkeys(["SAMPLING_OPTIONS", "SamplingOptions", "plan", "sampling_task"], "gentool.service"),
    # models, recipes, runs
    "DiffusionModel": "gentool.model",
    **dict.fromkeys(["ComponentSpec", "Recipe", "RecipeError", "load_recipe", "parse_override"], "gentool.recipe"),
    **dict.fromkeys(["Run", "build"], "gentool.run"),
    "load_run": "gentool.api",
    "resolve_device": "gentool.devices",
    # files, images, progress, errors (for tasks and commands)
    **dict.fromkeys(["make_grid", "save_grid", "save_images", "to_uint8"], "gentool.images"),
    **dict.fromkeys(["make_progress", "progress_callback"], "gentool.progress"),
    "stderr": ("gentool.progress", "console"),
    **dict.fromkeys(["atomic_save", "atomic_write_bytes", "atomic_write_text", "check_writable"], "gentool.atomic"),
    **dict.fromkeys(["DOWNLOAD_ERRORS", "ComponentError", "DataError", "GentoolError", "UsageError", "brief"],
                    "gentool.errors"),
    "lazy_names": "gentool.lazy",
    **dict.fromkeys(["WeightsFileError", "read_state_dict", "safe_torch_load"], "gentool.evaluation.weights"),
    "best_settings": "gentool.evaluation.best",
    "distributed_env": ("gentool.engine.distributed", "env"),
    # commands that run on a trained run (gentool/cli)
    "task_command": "gentool.cli.tasks_cmd",
    "print_task_result": ("gentool.cli.tasks_cmd", "report"),
    **dict.fromkeys(["SOURCE_HELP", "default_out"], "gentool.cli.sources"),
    "load_run_or_warn": "gentool.cli.app",
    **dict.fromkeys(["THREADS_HELP", "threads_override"], "gentool.cli.output"),
    "require_run": "gentool.paths",
    # gentool's own commands built from core functions
    "run_sweep": ("gentool.sweep", "sweep"),
    "run_compare": ("gentool.compare", "compare"),
    "reconstruct_ema": ("gentool.engine.phema_files", "reconstruct"),
    "export_weights": "gentool.engine.export",
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from gentool.diffusion import Diffusion
    from gentool.interfaces import (Autoencoder, Conditioner, DataSource, DenoiseFn, Denoiser, EpsFn, Logger,
                                    Objective, RunLike,
                                    Sampler, Schedule, StepCallback, Task, TaskResult)
    from gentool.model import DiffusionModel
    from gentool.parameterisation import (Affine, Denoised, EpsPrediction, Parameterisation, VPrediction,
                                          X0Prediction)
    from gentool.process import ContinuousProcess, Process
    from gentool.recipe import Recipe, RecipeError, load_recipe
    from gentool.api import load_run
    from gentool.run import Run, build
    from gentool.sampling import Guidance, guided_eps, make_denoise_fn
    from gentool.service import SamplingOptions, plan


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'gentool' has no attribute {name!r}")
    module, attribute = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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


class _Package(types.ModuleType):
    """``gentool``, whose ``registry`` stays the function above when the submodule ``gentool.registry`` loads."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "registry" and isinstance(value, types.ModuleType):
            return  # the import system binds a loaded submodule to its parent's attribute; keep the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "Affine",
    "ContinuousProcess",
    "Denoised",
    "DenoiseFn",
    "Diffusion",
    "DiffusionModel",
    "EpsPrediction",
    "Guidance",
    "Parameterisation",
    "Process",
    "RunLike",
    "SamplingOptions",
    "StepCallback",
    "VPrediction",
    "X0Prediction",
    "make_denoise_fn",
    "plan",
    "Recipe",
    "RecipeError",
    "Run",
    "build",
    "guided_eps",
    "load_recipe",
    "load_run",
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
