"""Small helpers for errors that the user reads: one line per exception, what a download raises."""

from __future__ import annotations

from urllib.error import URLError

#: what a download (torchvision's data sets, torch hub weights) raises: no network
#: (URLError), disk or socket errors (OSError), every mirror or a hash check failed (RuntimeError)
DOWNLOAD_ERRORS = (URLError, OSError, RuntimeError)


def brief(exc: BaseException, limit: int = 240) -> str:
    """An exception as one short line: ``Type: message``, whitespace collapsed, cut at ``limit``."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
