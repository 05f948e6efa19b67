"""How many CPU threads torch uses: ``[run] threads`` and ``--threads``.

``0`` (the default) picks :func:`default_threads`: one thread per two of the
cores this process may run on (``os.sched_getaffinity``), at least one. On a
CPU that other programs share, torch's own default (a thread per physical
core) makes its OpenMP threads spin-wait for each other: on 2 shared cores 20
Fashion-MNIST training steps took 4-6x longer and sampling 12x longer than with
one thread (docs/performance.md has the measurements of each candidate, busy
and idle). A user's ``OMP_NUM_THREADS`` is their explicit choice and wins over
the default; a positive ``threads`` wins over both.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; a container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(cores: int | None = None) -> int:
    """gentool's default thread count: one per two cores, at least one."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // 2)


def choose_threads(threads: int = 0) -> tuple[int | None, str]:
    """``(count, why)``: the count to set (``None``: leave torch's), and a few words saying where it came from."""
    if threads > 0:
        return threads, "[run] threads"
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None, "OMP_NUM_THREADS"
    return default_threads(), f"default for {available_cores()} cores"


def set_threads(threads: int = 0) -> int:
    """Set torch's intra-op thread count per :func:`choose_threads`; return the count in use."""
    import torch

    count, _ = choose_threads(threads)
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()


def describe_threads(threads: int = 0) -> str:
    """``"1 CPU thread (default for 2 cores)"``: the count torch uses now and where it came from."""
    import torch

    n = torch.get_num_threads()
    return f"{n} CPU thread{'s' if n != 1 else ''} ({choose_threads(threads)[1]})"
