"""Progress of long loops (sampling, training, evaluation, tasks).

On a terminal: a live rich bar. Anywhere else (a log file, a pipe, nohup, CI,
a notebook's captured output) a live bar would show nothing until the end, so
:class:`PlainProgress` prints plain lines instead, at most one every
:data:`MIN_INTERVAL_S` seconds, whenever another :data:`EVERY_PERCENT` percent
is done, and at least one every :data:`MAX_INTERVAL_S` seconds::

    sampling: 50/250 (20%), 12.1 s, about 48 s left

``GENTOOL_NO_PROGRESS`` (any value) turns both off; ``GENTOOL_PROGRESS_EVERY``
sets the minimum seconds between plain lines (``0``: a line at every
:data:`EVERY_PERCENT` percent).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, soft_wrap=True)

EVERY_PERCENT = 5.0
MIN_INTERVAL_S = 2.0
MAX_INTERVAL_S = 60.0


def disabled() -> bool:
    """``GENTOOL_NO_PROGRESS`` is set: no bars and no progress lines."""
    return bool(os.environ.get("GENTOOL_NO_PROGRESS"))


def live() -> bool:
    """Whether a live bar can be shown (progress on, standard error a terminal)."""
    return not disabled() and console.is_terminal


def _min_interval() -> float:
    raw = os.environ.get("GENTOOL_PROGRESS_EVERY", "")
    try:
        return max(0.0, float(raw)) if raw.strip() else MIN_INTERVAL_S
    except ValueError:
        return MIN_INTERVAL_S


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _count(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-6 else f"{x:.1f}"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    visible: bool
    start: float
    fields: dict[str, Any] = field(default_factory=dict)
    initial: float = 0.0  # completed when added (a resumed run): the rate counts what was done since
    last_line: float = 0.0
    last_percent: float = 0.0
    lines: int = 0


class PlainProgress:
    """The part of :class:`rich.progress.Progress` gentool uses, printing plain lines (see the module doc).

    ``write`` receives each line (default: standard error, after flushing
    standard output so that the two streams stay in order).
    """

    def __init__(self, *, disable: bool = False, write: Callable[[str], None] | None = None,
                 every_percent: float = EVERY_PERCENT, min_interval: float | None = None,
                 max_interval: float = MAX_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.disable, self.every_percent, self.max_interval = disable, every_percent, max_interval
        self.min_interval = _min_interval() if min_interval is None else min_interval
        self._write, self._clock = write, clock
        self._tasks: dict[int, _Task] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        if exc and exc[0] is not None:
            return
        for task in self._tasks.values():
            done = task.total is not None and task.completed >= task.total
            if task.visible and (task.lines or self._clock() - task.start >= self.min_interval) and done:
                self._line(task, final=True)

    def add_task(self, description: str, total: float | None = 100.0, completed: float = 0, visible: bool = True,
                 **fields: Any) -> int:
        now = self._clock()
        task_id = len(self._tasks)
        percent = 100.0 * completed / total if total else 0.0
        self._tasks[task_id] = _Task(description, total, completed, visible, now, dict(fields), completed, now, percent)
        return task_id

    @property
    def task_ids(self) -> list[int]:
        """The ids of the tasks added so far, oldest first (as rich's ``Progress.task_ids``)."""
        return list(self._tasks)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, visible: bool | None = None,
               **fields: Any) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if description is not None:
            task.description = description
        if visible is not None:
            task.visible = visible
        task.fields.update(fields)
        self._maybe_line(task)

    def _maybe_line(self, task: _Task) -> None:
        if self.disable or not task.visible or not task.total:
            return
        now = self._clock()
        since = now - task.last_line
        percent = 100.0 * task.completed / task.total
        step = percent - task.last_percent >= self.every_percent
        if (step and since >= self.min_interval) or (since >= self.max_interval and percent > task.last_percent):
            if percent < 100.0:  # the last line comes from __exit__
                self._line(task)

    def _line(self, task: _Task, *, final: bool = False) -> None:
        if self.disable:
            return
        now = self._clock()
        elapsed = now - task.start
        text = f"{task.description}: {_count(task.completed)}"
        if task.total:
            percent = 100.0 * task.completed / task.total
            text += f"/{_count(task.total)} ({percent:.0f}%), {_seconds(elapsed)}"
            done_since_start = task.completed - task.initial
            if not final and done_since_start > 0 and percent < 100:
                left = elapsed * (task.total - task.completed) / done_since_start
                text += f", about {_seconds(left)} left"
            task.last_percent = percent
        if task.fields.get("stats"):
            text += f" · {task.fields['stats']}"
        task.last_line, task.lines = now, task.lines + 1
        self._emit(text)

    def _emit(self, text: str) -> None:
        if self._write is not None:
            self._write(text)
            return
        sys.stdout.flush()
        console.print(text, markup=False, highlight=False)


def make_progress(*extra_columns, transient: bool = False) -> Progress | PlainProgress:
    """A live rich bar with gentool's columns on a terminal, else :class:`PlainProgress` lines.

    Both are off under ``GENTOOL_NO_PROGRESS``.
    """
    if not disabled() and not console.is_terminal:
        return PlainProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=console,
        transient=transient,
        disable=disabled(),
    )


@contextlib.contextmanager
def progress_callback(
    total: int,
    description: str,
    *,
    enabled: bool = True,
    inner: Callable[[dict], object] | None = None,
) -> Iterator[Callable[[dict], object] | None]:
    """A sampler callback that advances a progress bar (or prints progress lines), then calls ``inner``."""
    if not enabled:
        yield inner
        return
    with make_progress(transient=True) as bar:
        task = bar.add_task(description, total=total)

        def callback(info: dict):
            bar.advance(task)
            return inner(info) if inner is not None else None

        yield callback
