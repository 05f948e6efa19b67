"""SIGINT and SIGTERM ask the training loop to save a checkpoint and stop after the current step.

A signal the process was started with ignored (``SIG_IGN``: SIGINT for a
job started in the background with ``&`` by a non-interactive shell, or under
``nohup``) stays ignored, as the one who started the process asked.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any


class StopNow(KeyboardInterrupt):
    """The same signal twice while training: stop at once, without saving (a real Ctrl-C, not one code raised)."""


def is_real_interrupt(exc: BaseException) -> bool:
    """Is ``exc`` a Ctrl-C of the user (to obey), rather than a KeyboardInterrupt some code raised (to contain)?

    Inside :class:`StopRequest` a signal raises only :class:`StopNow`; outside
    it, Python's default handler raises KeyboardInterrupt, and any is taken as real.
    """
    if isinstance(exc, StopNow):
        return True
    return isinstance(exc, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is signal.default_int_handler


class StopRequest:
    """A context manager turning SIGINT/SIGTERM into a flag; the same signal again stops at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        # the same signal twice (Ctrl-C, Ctrl-C) stops now, without saving; a different one does not,
        # since torchrun answers a Ctrl-C by sending SIGTERM to workers that are already saving
        if self.signum == signum:
            raise StopNow
        self.signum = self.signum or signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def name(signum: int) -> str:
    return signal.Signals(signum).name if signum else ""
