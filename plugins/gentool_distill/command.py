"""``gentool distill RUN --method M``: a few-step student of a trained run, trained as a run of its own."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import typer

METHODS_HELP = ("progressive (VP models predicting v or x0), consistency or ect (EDM/VE sigma processes), reflow "
                "(rectified-flow models)")


def distill(
    run: Path = typer.Argument(..., help="The trained run to distil: its directory, a checkpoint or an exported file."),
    method: str = typer.Option(..., "--method", "-m", help=f"The distillation: {METHODS_HELP}."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the distilled run (default: RUN's name, "
                                       "an underscore and the method), a sibling of RUN's directory."),
    set_: List[str] = typer.Option([], "--set", help="Override a value of the distilled recipe, e.g. "
                                   "--set objective.rounds=4 or --set train.lr=1e-4 (TOML value syntax)."),
    check: bool = typer.Option(False, "--check", help="Print the distilled recipe and stop (nothing is written)."),
    device: Optional[str] = typer.Option(None, help="Override the recipe's run.device (cpu, cuda, cuda:N)."),
    tasks: bool = typer.Option(True, "--tasks/--no-tasks", help="Run the distilled recipe's tasks after training."),
    force: bool = typer.Option(False, "--force", help="Resume checkpoints written by a different recipe."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: as gentool run's, "
                                          "every core when they are idle; see gentool run --help)."),
) -> None:
    """Distil a trained run into a few-step student: a new run directory with its own recipe, checkpoints and resume.

    The student keeps the teacher's network and starts from its weights; the
    method is its objective, which holds the frozen teacher (copied into the new
    directory as teacher.safetensors). The same command again resumes it; so
    does gentool run on its recipe.resolved.toml. Methods: progressive
    (Salimans and Ho 2022), consistency (Song et al. 2023), ect (Geng et al.
    2024), reflow (Liu et al. 2022); see docs/distillation.md.
    """
    from rich.console import Console
    from rich.markup import escape

    from gentool import UsageError, load_run_or_warn, print_task_result, stderr, threads_override
    from gentool_distill.recipes import METHODS, distilled_recipe, refuse
    from gentool_distill.teacher import same_process

    if method not in METHODS:
        raise UsageError(f"--method {method!r}: unknown; methods are {', '.join(METHODS)}")
    teacher = load_run_or_warn(run, device="cpu", overrides=[])
    if teacher.checkpoint is None:
        raise UsageError(f"{run}: it holds no checkpoint, so there is no trained model to distil; train it first "
                         "(gentool run RECIPE)")
    why = refuse(method, teacher)
    if why:
        raise UsageError(f"{run}: cannot distil it with --method {method}: {why}")
    name = name or f"{teacher.run_dir.name}_{method}"
    source = f"gentool distill {run} --method {method}"
    recipe = _recipe(teacher, method, name, source, set_)
    why = same_process(teacher, SimpleNamespace(recipe=recipe))
    if why:
        raise UsageError(f"{run}: cannot distil it so: {why}")
    data, notes = distilled_recipe(teacher, method, name, recipe.objective.options)
    for note in notes:
        stderr.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    if check:
        Console(soft_wrap=True).print(_recipe_from(data, source, set_).dumps(), markup=False, highlight=False)
        return
    run_dir = Path(data["run"]["output_dir"]) / name
    _copy_teacher(teacher, run, run_dir, stderr)
    result = _train(source, data, set_ + threads_override(threads), device, tasks, force, print_task_result)
    if result.train.interrupted:
        raise typer.Exit(128 + result.train.signal)
    Console(soft_wrap=True).print(f"run directory: {escape(str(result.run.run_dir))}", highlight=False)


def _recipe(teacher, method: str, name: str, source: str, overrides: list[str]):
    """The distilled recipe with the user's overrides, its steps and sampler from the method's defaults."""
    from gentool_distill.recipes import distilled_recipe

    data, _ = distilled_recipe(teacher, method, name)
    return _recipe_from(data, source, overrides)


def _recipe_from(data: dict, source: str, overrides: list[str]):
    from gentool import load_recipe

    return load_recipe(source, data=data, overrides=list(overrides))


def _copy_teacher(teacher, source: Path, run_dir: Path, log) -> Path:
    """``RUN_DIR/teacher.safetensors``: the teacher's sampling weights and recipe, written once."""
    from gentool import atomic_write_bytes, export_weights
    from gentool_distill.teacher import TEACHER_FILE

    path = run_dir / TEACHER_FILE
    if path.exists():
        log.print(f"note: the teacher is {path}, copied when this distillation began", highlight=False, markup=False,
                  soft_wrap=True)
        return path
    run_dir.mkdir(parents=True, exist_ok=True)
    if Path(source).suffix == ".safetensors":  # an exported file already is what the copy would be
        atomic_write_bytes(path, Path(source).read_bytes())
    else:
        export_weights(teacher.checkpoint, path)
    log.print(f"copied the teacher ({teacher.checkpoint}, step {teacher.step}) to {path}", highlight=False,
              markup=False, soft_wrap=True)
    return path


def _train(source: str, data: dict, overrides: list[str], device, tasks: bool, force: bool, on_task):
    import gentool
    from gentool import stderr

    def log(message: str) -> None:
        stderr.print(message, highlight=False, soft_wrap=True, markup=False)

    return gentool.run_recipe(source, data=data, overrides=overrides, device=device, run_tasks=tasks, force=force,
                              log=log, on_task=lambda name, result: on_task(result))
