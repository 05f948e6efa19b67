"""torch.distributed under ``torchrun``: one process per GPU (NCCL) or per CPU worker (gloo).

``torchrun --nproc-per-node N -m gentool run RECIPE`` starts N processes and
sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`setup`
reads them and joins the process group. There is no launcher of our own.

Rank 0 alone writes checkpoints, metrics, plots and task outputs. Every rank
reads the chosen checkpoint when resuming, so on several nodes the run
directory must live on a shared file system. Small control messages (the stop
flag, RNG states, the checkpoint to resume) travel over a gloo group, so they
never wait on the GPU stream. ``GENTOOL_DIST_TIMEOUT_MIN`` (default 60) is how
long ranks wait for each other, e.g. while rank 0 evaluates alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from gentool.devices import resolve_device


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


_CONTROL: Any = None  # the gloo group for control messages
_OWNED = False  # whether setup() created the process group (and teardown() ends it)


def env() -> Dist:
    """The rank, world size and local rank that torchrun put in the environment."""
    get = lambda key, default: int(os.environ.get(key, default))  # noqa: E731
    return Dist(get("RANK", 0), get("WORLD_SIZE", 1), get("LOCAL_RANK", 0))


def local_device(spec: str | torch.device) -> torch.device:
    """The device this process trains on: under torchrun, ``"auto"``/``"cuda"`` mean ``cuda:LOCAL_RANK``."""
    device = resolve_device(str(spec))
    d = env()
    if d.enabled and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", d.local_rank)
    return device


def setup(device: torch.device) -> Dist:
    """Join the process group when WORLD_SIZE > 1 (NCCL for CUDA, else gloo); idempotent."""
    global _CONTROL, _OWNED
    d = env()
    if not d.enabled:
        return d
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.set_device(device if device.index is not None else torch.device("cuda", d.local_rank))
        minutes = int(os.environ.get("GENTOOL_DIST_TIMEOUT_MIN", "60"))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=minutes))
        _OWNED = True
    if _CONTROL is None:
        _CONTROL = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    return Dist(dist.get_rank(), dist.get_world_size(), d.local_rank)


def teardown() -> None:
    """Leave the process group if :func:`setup` created it."""
    global _CONTROL, _OWNED
    if _OWNED and dist.is_initialized():
        dist.destroy_process_group()
    _CONTROL, _OWNED = None, False


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait until every rank gets here (over the gloo group: no GPU sync)."""
    if active():
        dist.barrier(group=_CONTROL)


def any_flag(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (a CPU round trip, no GPU sync)."""
    if not active():
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_CONTROL)
    return bool(t.item())


def any_device_(flag: torch.Tensor) -> torch.Tensor:
    """In place: a device bool tensor made true everywhere if true on any rank (stays on the stream)."""
    if not active():
        return flag
    as_int = flag.to(torch.int32)
    dist.all_reduce(as_int, op=dist.ReduceOp.MAX)
    return as_int.bool()


def sum_device_(t: torch.Tensor) -> torch.Tensor:
    """In place: the sum of ``t`` over ranks."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` when not distributed)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_CONTROL)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_CONTROL)
    return box[0]
