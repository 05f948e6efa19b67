"""The run's loggers (``[run] loggers``) behind one object, as the train loop uses them.

Every logger (:class:`gentool.Logger`, registered through
``gentool_register_loggers``) receives the same calls on rank 0. A logger
that raises, when built or at any call, is reported once as a warning and
switched off: a metrics sink never stops training, not even by raising
``SystemExit`` or ``KeyboardInterrupt`` itself; only a real Ctrl-C does
(:func:`gentool.engine.signals.is_real_interrupt`).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from gentool.engine.metrics import METRICS, truncate_metrics
from gentool.engine.signals import is_real_interrupt


class Loggers:
    """Fans each call out to the recipe's loggers; ``write(record)`` takes a ``{"step": ..., ...}`` record."""

    def __init__(self, run, start_step: int, log: Callable[[str], None]) -> None:
        self.log = log
        self._active: list[tuple[str, Any]] = []
        # metrics.jsonl is the run's record of its steps (the plots read it): a resumed session
        # redoes the steps after its checkpoint, so their old lines go, whichever loggers write
        truncate_metrics(run.run_dir / METRICS, start_step)
        for name in run.recipe.run.loggers:
            try:
                options = run.recipe.logger_options.get(name, {})
                logger = run.registry.get("logger", name).factory(run.run_dir, **options)
            except BaseException as exc:  # noqa: BLE001 - a logger must never stop training (SystemExit included)
                if is_real_interrupt(exc):
                    raise
                self._warn(name, "could not be started", exc)
                continue
            self._active.append((name, logger))

    @property
    def names(self) -> list[str]:
        """The loggers still active."""
        return [name for name, _ in self._active]

    def _warn(self, name: str, what: str, exc: BaseException) -> None:
        self.log(f"warning: logger {name!r} {what} ({type(exc).__name__}: {exc}); training goes on without it")

    def _call(self, method: str, *args: Any) -> None:
        for entry in list(self._active):
            name, logger = entry
            try:
                getattr(logger, method)(*args)
            except BaseException as exc:  # noqa: BLE001 - reported once, then the logger is off
                if is_real_interrupt(exc):
                    raise
                self._active.remove(entry)
                self._warn(name, f"failed in {method}", exc)
                try:
                    logger.close()
                except BaseException as again:  # noqa: BLE001
                    if is_real_interrupt(again):
                        raise

    def scalars(self, step: int, scalars: dict[str, float]) -> None:
        self._call("log_scalars", step, scalars)

    def write(self, record: dict[str, Any]) -> None:
        """``record`` is ``{"step": step, **scalars}``."""
        record = dict(record)
        step = int(record.pop("step"))
        self.scalars(step, record)

    def image(self, step: int, name: str, image: Tensor) -> None:
        """``image``: ``[C, H, W]`` float in [0, 1]."""
        self._call("log_image", step, name, image)

    def text(self, step: int, name: str, text: str) -> None:
        self._call("log_text", step, name, text)

    def close(self) -> None:
        self._call("close")
        self._active = []
