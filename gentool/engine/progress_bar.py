"""The training progress: steps, loss, steps/s and images/s.

On a terminal a live rich bar. Where no live bar can be shown (output not a
terminal, e.g. a batch job's log file, nohup or CI; or ``GENTOOL_NO_PROGRESS``)
each metrics line (every ``[train] log_every`` steps) is logged as a plain,
complete line instead, with the share done and the time left::

    step 600/1200 (50%): loss 0.0512 · 1.90 steps/s · 61 img/s · about 5 min 16 s left
"""

from __future__ import annotations

from typing import Any, Callable

from rich.progress import TextColumn

from gentool.progress import _seconds, live, make_progress


def describe(record: dict[str, Any]) -> str:
    return (f"loss {record['loss']:.4f} · {record['steps_per_s']:.2f} steps/s · "
            f"{record['img_per_s']:.0f} img/s")


def plain_line(record: dict[str, Any], total: int) -> str:
    """``step 600/1200 (50%): loss ... · about 5 min 16 s left`` (no estimate at the last step)."""
    step = record["step"]
    text = f"step {step}/{total} ({100 * step / max(total, 1):.0f}%): {describe(record)}"
    rate = record.get("steps_per_s") or 0
    if step < total and rate > 0:
        text += f" · about {_seconds((total - step) / rate)} left"
    return text


class TrainProgress:
    """A live bar over ``total`` steps starting at ``completed``, or plain lines; ``show`` reports statistics."""

    def __init__(self, total: int, completed: int, *, enabled: bool, log: Callable[[str], None]) -> None:
        self.total, self.completed, self.enabled, self.log = total, completed, enabled, log
        self._live = enabled and live()
        self._bar = make_progress(TextColumn("{task.fields[stats]}")) if self._live else None
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
        elif self.enabled:
            self.log(plain_line(record, self.total))

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
