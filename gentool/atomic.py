"""Atomic file writes: a crash, a full disk or a read-only folder never leaves half a file.

:func:`atomic_write` writes through a temporary file in the target's folder
(``.<name>.<random>.tmp``), flushes and fsyncs it, then renames it over the
target: a reader sees the old file or the new one, never a part. On any error
the temporary file is removed and the error is raised as an :class:`OSError`
naming the target (``ENOSPC`` for a full disk, even when the writer, such as
``torch.save``, reports the failed write as a ``RuntimeError``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable


class _Recorder:
    """A file object that remembers the first OSError of a write (torch.save turns it into a RuntimeError)."""

    def __init__(self, f) -> None:
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def temp_prefix(path: Path) -> str:
    """The name prefix of ``path``'s temporary files (``clean_partial`` looks for it)."""
    return f".{Path(path).name}."


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=f".{os.getpid()}.tmp", dir=path.parent)
    recorder = None
    try:
        with os.fdopen(fd, "wb") as f:
            recorder = _Recorder(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = recorder.error if recorder is not None and recorder.error is not None else exc
        if isinstance(cause, OSError) and cause.errno is not None:
            raise OSError(cause.errno, os.strerror(cause.errno), str(path)) from exc
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
