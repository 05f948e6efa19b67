"""The errors a user reads: one base class for every user mistake, one line per fault.

:class:`GentoolError` is the base of every error that is the user's to fix (a
bad recipe value, an unknown name, a corrupt checkpoint, a run directory that
another process holds). The CLI prints one as ``error: ...`` (exit code 2); any
other exception is a bug and shows its traceback. An :class:`OSError` from the
file system (read-only, disk full, a path under a regular file) is a fault of
the machine, not a bug: :func:`describe_os_error` turns it into one line too.
"""

from __future__ import annotations

import errno
import os
from urllib.error import URLError

#: what a download (torchvision's data sets, torch hub weights) raises: no network
#: (URLError), disk or socket errors (OSError), every mirror or a hash check failed (RuntimeError)
DOWNLOAD_ERRORS = (URLError, OSError, RuntimeError)


class GentoolError(Exception):
    """Base of every user error: the CLI prints its message as one line, no traceback."""


class UsageError(GentoolError, ValueError):
    """A bad command-line value or argument (``--n 0``, ``--classes ,``, a recipe where a run is expected)."""


class RunLockedError(GentoolError):
    """Another process is writing into the run directory (it holds the run's lock)."""


class DataError(GentoolError, ValueError):
    """Data that does not fit the recipe (class labels past the conditioner's classes, an empty split)."""


class ComponentError(GentoolError, ValueError):
    """A plugin component (a task, a sampler, a data source) refused its options or inputs.

    Plugins raise a plain ValueError for a bad option (the plugin contract); the
    core wraps it in this class where it calls the component, naming the component.
    """


#: errno -> what the user reads (a fault of the machine, named in words)
OS_FAULTS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "not a directory (a part of the path is a regular file)",
    errno.EISDIR: "is a directory",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}


def describe_os_error(exc: OSError) -> str:
    """An OSError as ``<path>: <what> (<errno word>)``; a message-only one as its message."""
    if exc.errno is None or exc.strerror is None:
        return " ".join(str(exc).split()) or type(exc).__name__
    what = OS_FAULTS.get(exc.errno, exc.strerror)
    if exc.errno == errno.EEXIST and exc.filename is not None and os.path.isfile(exc.filename):
        what = "is a file, not a directory"  # Path.mkdir(parents=True) meeting a file on the way
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(str(p) for p in paths)
    return f"{where}: {what}" if where else what


def is_allocation_failure(exc: BaseException) -> bool:
    """Did an allocation fail (MemoryError, torch's "can't allocate memory", CUDA out of memory)?"""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def brief(exc: BaseException, limit: int = 240) -> str:
    """An exception as one short line: ``Type: message``, whitespace collapsed, cut at ``limit``."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
