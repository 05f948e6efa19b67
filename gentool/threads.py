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


def idle_cores() -> float:
    """Cores not taken by other runnable work over the last minute: cores - the 1-minute load average."""
    try:
        return available_cores() - os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this system
        return 0.0


def describe_threads(threads: int = 0, idle: float | None = None) -> str:
    """``"1 CPU thread (default for 2 cores)"``: the count torch uses now and where it came from.

    When the default leaves cores unused and the machine looks idle (``idle`` cores, from
    :func:`idle_cores` unless given), a hint follows: on 2 idle cores 2 threads trained 1.9x
    faster than 1, on 2 busy ones 3.6x slower (docs/performance.md), so the default stays
    the safe count and the choice is the user's.
    """
    import torch

    n = torch.get_num_threads()
    count, why = choose_threads(threads)
    text = f"{n} CPU thread{'s' if n != 1 else ''} ({why})"
    cores = available_cores()
    if threads <= 0 and count is not None and n < cores:
        idle = idle_cores() if idle is None else idle
        if idle >= cores - 0.5:
            text += f"; the cores look idle: --threads {cores} may be faster"
    return text
