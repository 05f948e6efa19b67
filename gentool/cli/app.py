"""The Typer application and the shared error handling of every command."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable

import typer
from rich.markup import escape

from gentool.cli.output import make_console, patch_typer_help

app = typer.Typer(
    name="gentool",
    help="gentool: plugin-based denoising diffusion models (DDPM and successors).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = make_console()  # never hard-wraps; wide tables when not a terminal (gentool/cli/output.py)
err = make_console(stderr=True)
patch_typer_help()


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: shown as one message, no traceback."""
    from gentool.engine.checkpoint import CheckpointError
    from gentool.engine.train import NonFiniteLossError, RecipeMismatchError
    from gentool.options import OptionError
    from gentool.recipe import RecipeError
    from gentool.registry import RegistryError

    return (RecipeError, OptionError, RegistryError, CheckpointError, NonFiniteLossError,
            RecipeMismatchError, FileNotFoundError, ValueError)


def friendly(fn: Callable) -> Callable:
    """Run a command; a user error prints ``error: ...`` and exits with code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except user_errors() as exc:
            if os.environ.get("GENTOOL_DEBUG"):
                raise
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)  # "[data]" is text
            raise typer.Exit(2) from None

    return wrapper


def load_run_or_warn(source, *, device: str | None, overrides: list[str]):
    """``load_run`` behind a status line; warn (stderr) when the run has no checkpoint yet."""
    from gentool.api import load_run

    with err.status(f"loading {escape(str(source))}"):
        run = load_run(source, device=device, overrides=list(overrides or []))
    if run.checkpoint is None:
        err.print(f"[yellow]warning:[/] {escape(str(source))} has no checkpoint; the weights are untrained",
                  highlight=False)
    return run


@contextlib.contextmanager
def status(message: str):
    with err.status(message):
        yield
