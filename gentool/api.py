"""The Python API behind every CLI command (the CLI only parses and prints)."""

from __future__ import annotations

import contextlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from gentool.autoguidance import use_loader
from gentool.process import Process
from gentool.engine import checkpoint as ckpt
from gentool.engine import distributed
from gentool.engine.data import check_split_shape
from gentool.engine.lock import RunLock
from gentool.errors import GentoolError, UsageError
from gentool.interfaces import TaskResult
from gentool.outputs import keep_earlier, note_step
from gentool.paths import require_run
from gentool.plugins import registry as plugin_registry
from gentool.recipe import Recipe, RecipeError, load_recipe
from gentool.run import RESOLVED_RECIPE, Run, build, build_space, validate
from gentool.terminal_snr import terminal_signal, terminal_signal_warning


@dataclass
class RunResult:
    run: Run
    train: Any = None
    tasks: list[tuple[str, TaskResult]] = field(default_factory=list)


def summarize(recipe: Recipe) -> dict[str, Any]:
    """Facts about a recipe worth seeing before spending compute on it.

    Refuses what ``gentool run`` would refuse before its first step: the
    factories' own checks (networks on the meta device), a data source
    refusing its options, and a train split that does not fit the denoiser
    or one batch. Missing data is reported, not refused. What is allowed but
    likely a mistake is listed under ``"warnings"`` (:func:`recipe_warnings`).
    """
    reg = plugin_registry()
    process, model = validate(recipe, registry=reg)  # the factories' own checks; networks on the meta device
    space = build_space(recipe, reg)  # the autoencoder, on the CPU: its options and files checked
    out: dict[str, Any] = {"run directory": str(recipe.run_dir)}
    warnings = recipe_warnings(recipe, process)
    if not space.identity:
        out["autoencoder"] = describe_space(space, getattr(model.denoiser, "image_shape", None))
        missing = getattr(space.autoencoder, "missing_weights", lambda: None)()
        if missing:
            warnings.append(f"{recipe.source}: autoencoder ({space.name}): {missing}")
    out["process"] = describe_process(recipe, process)
    params = sum(p.numel() for p in model.denoiser.parameters())
    out["denoiser parameters"] = f"{params:,} ({params / 1e6:.1f}M)"
    if model.conditioner is not None:
        out["conditioner parameters"] = f"{sum(p.numel() for p in model.conditioner.parameters()):,}"
    if recipe.data is not None:
        out["dataset (train)"] = _train_split(Run(recipe, reg, torch.device("meta"), process, model, space=space))
    out["sampler"] = f"{recipe.sampler.name}, steps = {recipe.sampler.steps or 'all'}, guidance = {recipe.sampler.guidance}"
    out["train steps"] = recipe.train.steps
    out["tasks"] = ", ".join(t.name for t in recipe.tasks) or "none"
    out["warnings"] = warnings
    return out


def describe_space(space, latent_shape) -> str:
    """One line about a latent run's autoencoder for ``gentool check``: the shapes, the weights, the scale."""
    shape = lambda s: "x".join(map(str, s))  # noqa: E731
    line = space.name
    if latent_shape is not None:
        line += f": {shape(space.image_shape(tuple(latent_shape)))} images to {shape(latent_shape)} latents"
    if space.fingerprint:
        line += f", weights {space.fingerprint[:12]}"
    scale = space.scale_factor
    return line + (f", scale factor {scale:g}" if scale is not None else ", scale factor measured on the train split")


def describe_process(recipe: Recipe, process: Process) -> str:
    """One line about the process for ``gentool check``: the chain's schedule and T, or a process's time range."""
    betas = getattr(process, "betas_64", None)
    if betas is not None and recipe.schedule is not None:
        return (f"{recipe.process.name}: schedule {recipe.schedule.name}, T = {betas.numel()}, "
                f"sqrt(alpha-bar_T) = {terminal_signal(betas):.2g}")
    alpha = float(process.alpha(process.t_max))
    sigma = float(process.sigma(process.t_max))
    return (f"{recipe.process.name}: t from {process.t_max:g} to {process.t_data:g}, "
            f"alpha = {alpha:.3g} and sigma = {sigma:.3g} at the noisiest")


def recipe_warnings(recipe: Recipe, process: Process) -> list[str]:
    """What ``gentool check`` and ``gentool run`` warn of (allowed, but likely a mistake), one line each.

    The signal left at t = T is the discrete chain's (its schedule's betas); a
    continuous process states its own noisiest time.
    """
    betas = getattr(process, "betas_64", None)
    signal = terminal_signal_warning(betas) if betas is not None and recipe.schedule is not None else None
    return [f"{recipe.source}: schedule ({recipe.schedule.name}): {signal}"] if signal else []


def _train_split(meta: Run) -> str:
    """The train split's size, checked as training checks it (:func:`check_split_shape`), never downloading.

    A data source that can tell the split's shape without loading it (its
    ``shape`` attribute, see :class:`gentool.DataSource`) is asked that;
    otherwise the split is built.
    """
    spec = meta.recipe.data
    factory = meta.registry.get("data_source", spec.name).factory
    options = dict(spec.options)
    will_download = bool(options.get("download"))
    if "download" in options:
        options["download"] = False  # a summary neither downloads nor creates the root folder
    try:
        shape = factory.shape("train", **options) if callable(getattr(factory, "shape", None)) else None
        if shape is None:
            data = factory("train", **options)
            shape = (len(data), *data[0][0].shape) if len(data) else (0,)
    except FileNotFoundError as exc:
        if will_download:
            into = f" into {options['root']}" if options.get("root") else ""
            return f"not downloaded yet: gentool run will download it{into}"
        return f"not available yet: {exc}"
    except ValueError as exc:  # the data source refuses its options: gentool run refuses them too (Run.dataset)
        if isinstance(exc, GentoolError):
            raise
        raise RecipeError(meta.recipe.source, f"data ({spec.name})", str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - a summary reports the problem; gentool run raises it
        return f"not available yet: {exc}"
    n, image_shape = shape[0], tuple(shape[1:]) or None
    check_split_shape(meta, n, image_shape)
    return f"{n:,} images"


def run_recipe(
    path: str | Path,
    *,
    data: dict[str, Any] | None = None,
    overrides: list[str] = (),
    resume: bool = True,
    force: bool = False,
    device: str | None = None,
    run_tasks: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_task: Callable[[str, TaskResult], None] | None = None,
) -> RunResult:
    """``gentool run``: validate, build, train (resuming), then run every task.

    ``on_task(name, result)`` is called as each task finishes (``gentool run``
    prints its files then, not all of them after the last task). Under
    ``torchrun`` each process trains on its own device (``cuda:LOCAL_RANK``)
    and only rank 0 runs the tasks. ``data`` is the recipe's TOML data when it is not read from ``path`` (which
    then only names it in messages; ``gentool distill`` composes its recipe so).
    """
    from gentool.engine.train import train  # the training stack loads only when training starts

    recipe = load_recipe(path, data=data, overrides=list(overrides))
    run = build(recipe, device=distributed.local_device(device or recipe.run.device))
    result = RunResult(run)
    main = distributed.env().main  # rank 0 writes, so rank 0 holds the lock
    for warning in recipe_warnings(recipe, run.process) if main else ():
        log(f"warning: {warning}")
    with RunLock(run.run_dir) if main else contextlib.nullcontext() as lock:  # through training and the tasks
        result.train = train(run, resume=resume, force=force, progress=progress, log=log, lock=lock)
        if result.train.interrupted or not run_tasks or not main:
            return result
        result.tasks = run_tasks_of(run, recipe.tasks, result.train, log=log, on_task=on_task)
    return result


def task_folders(specs) -> list[str]:
    """Each task's folder name in the run directory: its name, then ``NAME_2``, ``NAME_3``, ... for a task
    named again (two ``[[tasks]] name = "sample"`` no longer write into one folder)."""
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        out.append(spec.name if seen[spec.name] == 1 else f"{spec.name}_{seen[spec.name]}")
    return out


def run_tasks_of(run: Run, specs, trained, *, log: Callable[[str], None] = print,
                 on_task: Callable[[str, TaskResult], None] | None = None) -> list[tuple[str, TaskResult]]:
    """Run a recipe's tasks into ``RUN_DIR/<task>/``, keeping the outputs of an earlier step there.

    Outputs made at another step than ``run.step`` are first moved into
    ``RUN_DIR/<task>/step_<N>/`` (:func:`gentool.outputs.keep_earlier`);
    ``trained`` is the :class:`~gentool.engine.train.TrainResult` of this call.
    """
    resumed = trained.resumed_from if trained is not None and trained.step > trained.resumed_from else 0
    done = []
    for spec, name in zip(specs, task_folders(specs)):
        log(f"task {name}")
        folder = run.run_dir / name
        kept = keep_earlier(folder, run.step, made_at=resumed or None)
        if kept is not None:
            log(f"kept the earlier outputs of {spec.name} in {kept}")
        done.append((name, run.run_task(spec, folder)))
        note_step(folder, run.step)
        if on_task is not None:
            on_task(*done[-1])
    return done


def load_run(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    overrides: list[str] = (),
) -> Run:
    """Load a trained run from a run directory, a checkpoint file or an exported file.

    A run directory loads its newest good checkpoint; a checkpoint file and a
    ``.safetensors`` file written by ``gentool export`` carry their recipe
    (the run directory's resolved recipe is preferred when the checkpoint is
    still in its run directory).
    """
    path = require_run(path)
    if path.suffix == ".safetensors":
        return ckpt.load_exported(path, device=device, overrides=list(overrides))
    if path.suffix == ".toml":
        raise UsageError(f"{path} is a recipe, not a trained run: train it with `gentool run {path}`, then use its "
                         "run directory (runs/<name>, printed at the end of the run) or one of its checkpoints")
    run_dir = path if path.is_dir() else ckpt.run_dir_of(path)
    recipe_file = run_dir / RESOLVED_RECIPE
    if path.is_file() and not recipe_file.exists():  # a checkpoint copied out of its run: its own recipe
        state = ckpt.load_checkpoint(path)
        if not isinstance(state.get("recipe"), str):
            raise ckpt.CheckpointError(f"{path}: the checkpoint holds no recipe and {recipe_file} does not exist")
        recipe = load_recipe(path, data=tomllib.loads(state["recipe"]), overrides=list(overrides))
        recipe.run.output_dir, recipe.run.name = str(path.parent), path.stem
        run = build(recipe, device=device)
        ckpt.restore_latest(run, path, state)  # the file is read once
        return run
    if not recipe_file.exists():
        raise FileNotFoundError(f"{recipe_file}: not found; is {run_dir} a gentool run directory (the folder "
                                "`gentool run` prints at its end)?")
    recipe = load_recipe(recipe_file, overrides=list(overrides))
    # the run directory is where it is now, wherever it was trained
    recipe.run.output_dir, recipe.run.name = str(run_dir.parent), run_dir.name
    run = build(recipe, device=device)
    ckpt.restore_latest(run, path if path.is_file() else None)
    return run


use_loader(load_run)  # a guide_with path (autoguidance) loads as a run, from the service below
