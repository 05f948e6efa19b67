"""Where the command line writes, and how, on a terminal and elsewhere (a log file, a pipe, CI, nohup).

* Nothing a command prints is hard-wrapped: an error, a path or a URL stays on
  one line however narrow the output (``soft_wrap=True``), so it can be copied.
* Off a terminal, rich renders tables at :data:`PLAIN_WIDTH` columns instead of
  its 80, and Typer's help likewise (``TERMINAL_WIDTH`` / ``COLUMNS`` still win).
* Standard output is line-buffered off a terminal too, so its lines and those
  of standard error (progress, logs) reach a shared log file in the order they
  were written.
* Boolean flags show no ``<bool>`` placeholder in ``--help``: they take no value.

Importing this module imports rich and Typer only (no torch).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape

PLAIN_WIDTH = 120  # columns for tables and help when the output is not a terminal


def _width(stream) -> int | None:
    """``None`` (rich decides) on a terminal or when the user set a width; :data:`PLAIN_WIDTH` otherwise."""
    if os.environ.get("COLUMNS") or os.environ.get("TERMINAL_WIDTH"):
        return None
    isatty = getattr(stream, "isatty", None)
    return None if isatty is not None and isatty() else PLAIN_WIDTH


def make_console(*, stderr: bool = False) -> Console:
    """A rich console that never wraps printed text; wide tables off a terminal."""
    return Console(stderr=stderr, soft_wrap=True, width=_width(sys.stderr if stderr else sys.stdout))


def stderr_console() -> Console:
    """The console of standard error: the one progress bars draw on (:data:`gentool.progress.console`).

    One console, so that a message printed while a live bar runs (a log line
    of training, the Ctrl-C message) is put above the bar by rich, on a line of
    its own, not glued to the end of the bar's line. Off a terminal, as wide as
    :func:`make_console` makes its consoles.
    """
    from gentool.progress import console

    width = _width(sys.stderr)
    if width is not None:
        console.width = width
    return console


def is_terminal(console: Console) -> bool:
    return console.is_terminal


def line_buffered_stdout() -> None:
    """Flush standard output at each line, as on a terminal, so it interleaves with standard error in order."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and not sys.stdout.isatty():
        try:
            reconfigure(line_buffering=True)
        except (ValueError, OSError):  # a detached or closed stream: leave it
            pass


def patch_typer_help() -> None:
    """Typer's help: no value placeholder for flags; off a terminal, :data:`PLAIN_WIDTH` columns."""
    from typer import core

    option = core.TyperOption
    if not getattr(option.display_type_rich, "_gentool", False):
        original = option.display_type_rich

        def display_type_rich(self, ctx):
            return None if self.is_flag else original(self, ctx)

        display_type_rich._gentool = True  # type: ignore[attr-defined]
        option.display_type_rich = display_type_rich
    # typer.rich_utils (rich.markdown, markdown-it: a quarter of a second) is imported only to print help; it
    # reads its width from TERMINAL_WIDTH when imported
    rich_utils = sys.modules.get("typer.rich_utils")
    width = _width(sys.stdout)
    if rich_utils is not None and rich_utils.MAX_WIDTH is None:
        rich_utils.MAX_WIDTH = width
    elif rich_utils is None and width is not None:
        os.environ.setdefault("TERMINAL_WIDTH", str(width))


THREADS_HELP = escape("CPU threads for torch; 0: gentool's default, one per two cores, or every core for a new "
                      "training run when they are idle (sets [run] threads).")


def threads_override(threads: int | None) -> list[str]:
    """``--threads N`` as the recipe override it stands for (``[]`` when not given); a negative N is refused
    here, before torch's import."""
    if threads is not None and threads < 0:
        from gentool.errors import UsageError

        raise UsageError(f"--threads {threads}: use 0 (gentool's default) or a count of threads")
    return [] if threads is None else [f"run.threads={threads}"]
