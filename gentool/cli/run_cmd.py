"""``gentool check`` and ``gentool run``: validate a recipe, train, run its tasks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gentool.cli.app import app, console, err, friendly
from gentool.cli.output import THREADS_HELP, threads_override
from gentool.paths import require_recipe

SET_HELP = "Override a recipe value, e.g. --set train.steps=100 (TOML value syntax)."


@app.command()
@friendly
def check(
    recipe: Path = typer.Argument(..., help="Recipe TOML file."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
) -> None:
    """Validate a recipe and print it resolved, with a summary. Exit 0 when valid."""
    require_recipe(recipe)  # before torch's import
    from gentool.api import summarize
    from gentool.recipe import load_recipe

    rec = load_recipe(recipe, overrides=set_)
    summary = summarize(rec)  # the factories' own checks (networks on the meta device) and the data's, first
    for note in rec.notes:  # e.g. a key that moved to another table
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    for warning in summary.pop("warnings"):  # allowed, but likely a mistake: shown with --quiet too
        err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    if quiet:
        return
    from rich.syntax import Syntax  # start-up: pygments, only when the recipe is printed

    console.print(Syntax(rec.dumps(), "toml", theme="ansi_dark", background_color="default"))
    table = Table(title=f"{recipe}: valid", title_justify="left", show_header=False)
    for key, value in summary.items():
        table.add_row(key, Text(str(value)))  # plain text: "[data]" in a message is not markup
    console.print(table)


@app.command()
@friendly
def run(
    recipe: Path = typer.Argument(..., help="Recipe TOML file."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Resume from the run directory's newest good checkpoint (the default)."),
    force: bool = typer.Option(False, "--force", help="Resume checkpoints written by a different recipe; "
                               "with --no-resume, move old checkpoints aside and start over."),
    device: Optional[str] = typer.Option(None, help="Override the recipe's run.device (cpu, cuda, cuda:N)."),
    tasks: bool = typer.Option(True, "--tasks/--no-tasks", help=escape("Run the recipe's [[tasks]] after training.")),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
) -> None:
    """Train per the recipe's \\[train] table (resuming if possible), then run its tasks.

    Ctrl-C or SIGTERM saves a checkpoint and stops; the same command resumes.
    For several GPUs: torchrun --nproc-per-node N -m gentool run RECIPE.
    """
    require_recipe(recipe)  # the arguments first: torch's import takes seconds on a busy machine
    overrides = [*set_, *threads_override(threads)]
    from gentool.api import run_recipe
    from gentool.engine.distributed import env

    result = run_recipe(recipe, overrides=overrides, resume=resume, force=force, device=device,
                        run_tasks=tasks, log=lambda m: err.print(m, highlight=False, soft_wrap=True, markup=False),
                        on_task=print_task)
    if not env().main:
        return
    if result.train.interrupted:
        raise typer.Exit(128 + result.train.signal)  # the shell's convention for "stopped by a signal"
    console.print(f"run directory: {result.run.run_dir}", markup=False)


def print_task(name: str, task_result) -> None:
    """A task's files (the first five) and metrics, printed as the task finishes."""
    for f in task_result.files[:5]:
        console.print(f"[green]wrote[/] {escape(str(f))}", highlight=False, soft_wrap=True)
    if len(task_result.files) > 5:
        console.print(f"[green]wrote[/] {len(task_result.files) - 5} more files for {name}", highlight=False)
    for k, v in task_result.metrics.items():
        console.print(f"{name}: {k} = {v:.4g}", markup=False)
