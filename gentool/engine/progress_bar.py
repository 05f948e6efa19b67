"""The training progress bar: steps, loss, steps/s and images/s.

Where no live bar can be shown (``GENTOOL_NO_PROGRESS``, output not a
terminal, e.g. a batch job's log file) each metrics line is also logged as
text, so a log file shows progress too.
"""

from __future__ import annotations

from typing import Any, Callable

from rich.progress import TextColumn

from gentool.progress import console, make_progress


def describe(record: dict[str, Any]) -> str:
    return (f"loss {record['loss']:.4f} · {record['steps_per_s']:.2f} steps/s · "
            f"{record['img_per_s']:.0f} img/s")


class TrainProgress:
    """A rich bar over ``total`` steps starting at ``completed``; ``show`` updates its statistics."""

    def __init__(self, total: int, completed: int, *, enabled: bool, log: Callable[[str], None]) -> None:
        self.total, self.completed, self.enabled, self.log = total, completed, enabled, log
        self._bar = make_progress(TextColumn("{task.fields[stats]}")) if enabled else None
        self._live = enabled and not self._bar.disable and console.is_terminal
        self._task = None

    def __enter__(self) -> "TrainProgress":
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task("training", total=self.total, completed=self.completed, stats="")
        return self

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def show(self, record: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(self._task, stats=describe(record))
        if self.enabled and not self._live:
            self.log(f"step {record['step']}/{self.total}: {describe(record)}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
