"""Atomic file writes: a crash, a full disk or a read-only folder never leaves half a file.

:func:`atomic_write` writes through a temporary file in the target's folder
(``.<name>.<random>.tmp``), flushes and fsyncs it, then renames it over the
target: a reader sees the old file or the new one, never a part. On any error
the temporary file is removed and the error is raised as an :class:`OSError`
naming the target (``ENOSPC`` for a full disk, even when the writer, such as
``torch.save``, reports the failed write as a ``RuntimeError``).

:func:`with_checksum` adds a CRC-32 of every tensor of a state to it, and
:func:`checksum_matches` tells whether a loaded state still matches it: a
flipped bit on the disk is found at load (checkpoints, cached features).
"""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable

import torch


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


def check_writable(path: str | Path, size: int) -> None:
    """Raise the OSError (naming ``path``) that writing ``size`` bytes beside ``path`` meets; leave nothing behind.

    For a command that computes for long before it writes (``gentool features
    train``): a read-only folder, a full disk or a file on the way fails at
    once, not after the work. The bytes are written and fsynced to a
    temporary file, which is then removed; ``path`` itself is not touched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=f".{os.getpid()}.tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            for start in range(0, size, 1 << 20):
                f.write(bytes(min(1 << 20, size - start)))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, os.strerror(exc.errno), str(exc.filename or path)) from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file, fsync, rename)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


CHECKSUM = "checksum"  # the key of a saved state's tensor checksum


def tensor_checksum(obj: Any) -> str:
    """CRC-32 over every tensor in ``obj`` (nested dicts and lists), with its key path, dtype and shape.

    It changes with any flipped bit of any tensor; ``"checksum"`` keys are skipped.
    """
    crc = 0
    for where, tensor in _tensors(obj, ""):
        crc = zlib.crc32(f"{where}|{tensor.dtype}|{tuple(tensor.shape)}".encode(), crc)
        data = tensor.detach().reshape(-1).contiguous().cpu()
        if data.numel():
            crc = zlib.crc32(data.view(torch.uint8).numpy(), crc)
    return f"crc32:{crc:08x}"


def _tensors(obj: Any, where: str):
    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            if key != CHECKSUM:
                yield from _tensors(obj[key], f"{where}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{where}/{i}")


def with_checksum(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` plus its ``"checksum"`` (see :func:`tensor_checksum`)."""
    return {**state, CHECKSUM: tensor_checksum(state)}


def checksum_matches(state: dict[str, Any]) -> bool:
    """Do the tensors of ``state`` still match the checksum saved with them? (True when none was saved.)"""
    saved = state.get(CHECKSUM)
    return saved is None or tensor_checksum(state) == saved


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
