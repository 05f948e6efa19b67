"""Rich progress bars for long loops (sampling, training, evaluation)."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def make_progress(*extra_columns, transient: bool = False) -> Progress:
    """A rich progress bar with gentool's columns (disabled under GENTOOL_NO_PROGRESS)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=console,
        transient=transient,
        disable=bool(os.environ.get("GENTOOL_NO_PROGRESS")),
    )


@contextlib.contextmanager
def progress_callback(
    total: int,
    description: str,
    *,
    enabled: bool = True,
    inner: Callable[[dict], object] | None = None,
) -> Iterator[Callable[[dict], object] | None]:
    """A sampler callback that advances a progress bar, then calls ``inner``."""
    if not enabled:
        yield inner
        return
    with make_progress(transient=True) as bar:
        task = bar.add_task(description, total=total)

        def callback(info: dict):
            bar.advance(task)
            return inner(info) if inner is not None else None

        yield callback
