"""The tasks that are also ``gentool`` commands, registered through the command hook.

Cheap to import (typer only): the tasks, the run and torch load when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

#: task name -> the summary of its command (``gentool NAME RUN [options]``)
RUN_TASKS = {
    "inpaint": "Fill in a masked region of images (replacement, or RePaint with --resamplings > 1).",
    "interpolate": "Interpolate between two images (Ho et al. sec. 4.3) or two seeds (slerp of x_T).",
    "variations": "SDEdit variations: noise input images to a fraction --t of the diffusion, then denoise.",
    "animate": "Animate the forward (noising) and reverse (sampling) processes as PNG strips and GIFs.",
}


def schedules(
    names: Optional[List[str]] = typer.Argument(None, help=escape("Registered schedule names [default: all of them].")),
    timesteps: int = typer.Option(1000, "--timesteps", "-T", help="T, the number of diffusion steps."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Folder to write schedules.png into."),
) -> None:
    """Plot alphas_cumprod and its square root for schedules side by side (e.g. linear cosine sigmoid)."""
    from gentool import print_task_result as report
    from gentool import ComponentError, GentoolError
    from gentool_tasks.schedules_plot import schedules as plot

    out.mkdir(parents=True, exist_ok=True)
    try:
        result = plot(None, out, names=list(names or []), timesteps=timesteps)
    except ValueError as exc:  # a schedule refusing its options: the user's to fix, one line
        if isinstance(exc, GentoolError):
            raise
        raise ComponentError(f"gentool schedules: {exc}") from exc
    report(result)
