"""How many CPU threads torch uses: ``[run] threads`` and ``--threads``.

``0`` (the default) picks :func:`default_threads`: one thread per two of the
cores this process may run on (``os.sched_getaffinity``), at least one. On a
CPU that other programs share, torch's own default (a thread per physical
core) makes its OpenMP threads spin-wait for each other: on 2 shared cores 20
Fashion-MNIST training steps took 4-6x longer and sampling 12x longer than with
one thread (docs/performance.md has the measurements of each candidate, busy
and idle). A user's ``OMP_NUM_THREADS`` is their explicit choice and wins over
the default; a positive ``threads`` wins over both.

Training a new run with the default is the exception: it measures how busy the
cores are right now (:func:`idle_cores_now`, a quarter second of
``/proc/stat``) and takes every core when the others leave them idle
(:func:`training_threads`; 2 threads trained 1.9x faster on 2 idle cores). The
count is written into the checkpoints, and a resumed run takes the count it was
trained with, whatever the load is then: a different count changes the float
sums, and with them the trajectory, so this keeps resume exact.
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


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat (Linux), or None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, user .. steal


def idle_cores_now(window: float = 0.25) -> float:
    """Cores idle over the next ``window`` seconds while this process sleeps (the 1-minute load average where
    /proc/stat is missing): an install that just finished does not count, as it does in the load average."""
    import time

    before = _cpu_times()
    if before is None:
        return idle_cores()
    time.sleep(window)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return idle_cores()
    return available_cores() * (after[0] - before[0]) / (after[1] - before[1])


def training_threads(threads: int = 0, recorded: int | None = None, *,
                     idle: float | None = None) -> tuple[int | None, str]:
    """``(count, why)`` for a training run: :func:`choose_threads`, except that the default takes every core
    of an idle machine for a new run (``idle`` cores, measured by :func:`idle_cores_now` unless given) and,
    resuming, the count the checkpoint was trained with (``recorded``), so that the resumed run is exact."""
    count, why = choose_threads(threads)
    if threads > 0 or count is None:
        return count, why
    if recorded is not None and recorded > 0:
        return recorded, "as the checkpoint was trained: an exact resume"
    cores = available_cores()
    idle = idle_cores_now() if idle is None else idle
    if cores > 1 and idle >= cores - 0.5:
        return cores, f"the {cores} cores are idle"
    return count, f"{why}; the cores are busy"


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
