"""One writer per run directory: an exclusive lock that the OS releases when its holder dies.

``gentool run`` takes the lock of its run directory (the file ``.gentool.lock``
in it, holding the holder's PID) before it touches anything there: resuming,
cleaning temporary files, moving old checkpoints aside, writing checkpoints,
metrics and task outputs. A second writer stops at once with a one-line
:class:`~gentool.errors.RunLockedError` naming the PID that holds it. The lock
is ``flock`` (``msvcrt.locking`` on Windows): the kernel drops it when the
process exits, however it exits, so a SIGKILL leaves no stale lock behind.
Readers (``gentool sample``, ``eval``, ``export`` of a run that is training)
take no lock: checkpoints are written atomically, so a reader sees whole files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path
from typing import Iterator

from gentool.errors import RunLockedError

LOCK_FILE = ".gentool.lock"
#: a lock file that cannot be created for these reasons means no process can write there either
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
#: the lock file is opened without following a symbolic link: a planted link must not make
#: gentool truncate (and write its PID into) a file elsewhere
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class RunLock:
    """The exclusive lock of one run directory.

    :meth:`acquire` takes it (again: a no-op); as a context manager it takes it
    when the run directory exists (a missing one is locked by whoever makes it)
    and releases it at the end.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock (the run directory must exist); raise RunLockedError if another process holds it."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno in _UNWRITABLE:  # a read-only run: nobody can write into it, so nothing to guard
                return self
            if exc.errno == errno.ELOOP or self.path.is_symlink():
                raise RunLockedError(f"{self.path}: is a symbolic link, not gentool's lock file; "
                                     "remove the link (gentool never writes through it)") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device planted under the lock's name
            os.close(fd)
            raise RunLockedError(f"{self.path}: is not a regular file, not gentool's lock file; remove it")
        if not _try_lock(fd):
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise RunLockedError(
                f"{self.run_dir}: another gentool run is writing into this run directory ({who} holds "
                f"{self.path.name}); wait for it to finish, stop it, or use another run name (--set run.name=...)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire() if self.run_dir.is_dir() else self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def exclusive(path: str | Path, *, poll: float = 0.02) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created; never through a link) while inside, waiting for it.

    For a short read-modify-write of a file that several processes share
    (``sweep.json`` of a ``--variant I`` job array); released when the block
    ends or the process dies.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
    try:
        while not _try_lock(fd):
            time.sleep(poll)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)
