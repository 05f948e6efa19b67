"""The Python API behind every CLI command (the CLI only parses and prints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gentool.interfaces import TaskResult
from gentool.recipe import Recipe, load_recipe
from gentool.run import Run, build, validate


@dataclass
class RunResult:
    run: Run
    train: Any = None
    tasks: list[tuple[str, TaskResult]] = field(default_factory=list)


def summarize(recipe: Recipe) -> dict[str, Any]:
    """Facts about a recipe worth seeing before spending compute on it."""
    from gentool.plugins import registry

    reg = registry()
    diffusion, model = validate(recipe, registry=reg)  # the factories' own checks; networks on the meta device
    out: dict[str, Any] = {"run directory": str(recipe.run_dir)}
    out["schedule"] = f"{recipe.schedule.name}, T = {diffusion.num_timesteps}"
    params = sum(p.numel() for p in model.denoiser.parameters())
    out["denoiser parameters"] = f"{params:,} ({params / 1e6:.1f}M)"
    if model.conditioner is not None:
        out["conditioner parameters"] = f"{sum(p.numel() for p in model.conditioner.parameters()):,}"
    if recipe.data is not None:
        factory = reg.get("data_source", recipe.data.name).factory
        options = dict(recipe.data.options)
        will_download = bool(options.get("download"))
        if "download" in options:
            options["download"] = False  # a summary neither downloads nor creates the root folder
        try:
            out["dataset (train)"] = f"{len(factory('train', **options)):,} images"
        except FileNotFoundError as exc:
            if will_download:
                into = f" into {options['root']}" if options.get("root") else ""
                out["dataset (train)"] = f"not downloaded yet: gentool run will download it{into}"
            else:
                out["dataset (train)"] = f"not available yet: {exc}"
        except Exception as exc:  # noqa: BLE001 - a summary reports the problem; gentool run raises it
            out["dataset (train)"] = f"not available yet: {exc}"
    out["sampler"] = f"{recipe.sampler.name}, steps = {recipe.sampler.steps or 'all'}, guidance = {recipe.sampler.guidance}"
    out["train steps"] = recipe.train.steps
    out["tasks"] = ", ".join(t.name for t in recipe.tasks) or "none"
    return out


def run_recipe(
    path: str | Path,
    *,
    overrides: list[str] = (),
    resume: bool = True,
    force: bool = False,
    device: str | None = None,
    run_tasks: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunResult:
    """``gentool run``: validate, build, train (resuming), then run every task.

    Under ``torchrun`` each process trains on its own device (``cuda:LOCAL_RANK``)
    and only rank 0 runs the tasks.
    """
    from gentool.engine import distributed
    from gentool.engine.train import train

    recipe = load_recipe(path, overrides=list(overrides))
    run = build(recipe, device=distributed.local_device(device or recipe.run.device))
    result = RunResult(run)
    result.train = train(run, resume=resume, force=force, progress=progress, log=log)
    if result.train.interrupted or not run_tasks or not distributed.env().main:
        return result
    for spec in recipe.tasks:
        log(f"task {spec.name}")
        result.tasks.append((spec.name, run.run_task(spec)))
    return result
