"""The Typer application and the shared error handling of every command."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable

import typer
from rich.markup import escape

from gentool.cli.output import make_console, patch_typer_help, stderr_console
from gentool.cli.plugin_commands import PluginCommandsGroup

app = typer.Typer(
    name="gentool",
    help="gentool: plugin-based denoising diffusion models (DDPM and successors).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=PluginCommandsGroup,  # adds the commands plugins register (gentool_register_commands)
)
console = make_console()  # never hard-wraps; wide tables when not a terminal (gentool/cli/output.py)
err = stderr_console()  # the progress bars' console: a message during a live bar prints above it
patch_typer_help()


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's (or the machine's) to fix: one line, no traceback.

    Every user mistake is a :class:`~gentool.errors.GentoolError`; an OSError is
    a fault of the file system (disk full, read-only, not a directory) or a
    missing file. Anything else is a bug and keeps its traceback.
    """
    from gentool.errors import GentoolError

    return (GentoolError, OSError)


def message_of(exc: BaseException) -> str:
    """The one line a user error prints after ``error:``."""
    from gentool.errors import describe_os_error

    text = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
    return " ".join(text.split()) if isinstance(exc, OSError) else text


def friendly(fn: Callable) -> Callable:
    """Run a command; a user error prints ``error: ...`` and exits with code 2; Ctrl-C exits 130 quietly."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except user_errors() as exc:
            if os.environ.get("GENTOOL_DEBUG"):
                raise
            err.print(f"[bold red]error:[/] {escape(message_of(exc))}", highlight=False, markup=True)  # "[data]" is text
            raise typer.Exit(2) from None
        except (MemoryError, RuntimeError) as exc:
            from gentool.errors import is_allocation_failure

            if not is_allocation_failure(exc) or os.environ.get("GENTOOL_DEBUG"):
                raise
            err.print(f"[bold red]error:[/] out of memory: {escape(' '.join(str(exc).split())[:200])}; ask for "
                      "less at a time (a smaller --n or --batch-size)", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            if os.environ.get("GENTOOL_DEBUG"):
                raise
            raise typer.Exit(130) from None  # the shell's 128 + SIGINT; no traceback, no "Aborted!"

    return wrapper


PluginCommandsGroup.wrap = staticmethod(friendly)  # plugin commands print user errors like the built-in ones


def load_run_or_warn(source, *, device: str | None, overrides: list[str]):
    """``load_run`` behind a status line; a run without a loadable checkpoint is an error.

    Only a recipe with ``train.steps = 0`` samples untrained weights, on purpose
    (with a warning): a run whose checkpoints are all unreadable must not.
    """
    from gentool.paths import require_run

    require_run(source)  # a typo is reported before torch's import
    from gentool.api import load_run  # start-up: torch, once the arguments are checked
    from gentool.engine.checkpoint import CHECKPOINT_DIR, CheckpointError, list_checkpoints

    with err.status(f"loading {escape(str(source))}"):
        run = load_run(source, device=device, overrides=list(overrides or []))
    if run.checkpoint is None:
        if run.recipe.train.steps > 0:
            found = list_checkpoints(run.run_dir)
            why = (f"none of its {len(found)} checkpoint file(s) in {run.run_dir / CHECKPOINT_DIR} could be read"
                   if found else "it has no checkpoint yet")
            raise CheckpointError(f"{source}: {why}; train it with `gentool run` (a recipe with train.steps = 0 "
                                  "samples untrained weights on purpose)")
        err.print(f"[yellow]warning:[/] {escape(str(source))} has no checkpoint (train.steps = 0); the weights are "
                  "untrained", highlight=False)
    return run


@contextlib.contextmanager
def status(message: str):
    with err.status(message):
        yield
