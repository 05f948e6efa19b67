"""Training metrics: accumulated on the device every step, read every ``log_every`` and sent to the loggers.

The ``jsonl`` logger writes ``metrics.jsonl`` in the run directory (the plots
and ``gentool compare`` read it): one JSON object per line, each with a
``step``: training lines (``loss``, ``lr``, ``grad_norm``, ``steps_per_s``,
``img_per_s``, ``skipped`` and the objective's extra scalars), test-loss lines
(``test_loss/t=<t>``) and evaluation lines (``eval/<metric>``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gentool.engine import distributed

METRICS = "metrics.jsonl"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file: JSON objects with an integer ``step``, one a line.

    A damaged line is skipped, so a damaged file stops neither ``gentool
    compare`` nor a resumed run: one cut short by a crash, one that is not
    UTF-8 or not JSON, one whose ``step`` is not an integer.
    """
    out = []
    if Path(path).exists():
        for line in Path(path).read_bytes().splitlines():
            try:
                record = json.loads(line.decode("utf-8"))
            except (ValueError, RecursionError):  # not UTF-8 (UnicodeDecodeError), not JSON, nested too deep
                continue
            if isinstance(record, dict) and type(record.get("step")) is int:
                out.append(record)
    return out


def truncate_metrics(path: Path, start_step: int) -> None:
    """Before a session appends to ``path``: drop the lines after ``start_step`` (a resumed run
    redoes those steps), or all of them on a fresh run (``start_step = 0``). A missing file stays missing."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if r["step"] <= start_step] if start_step > 0 else []
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    os.replace(tmp, path)


class StepStats:
    """Sums of loss and gradient norm over the finite steps since the last :meth:`flush` (no sync)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sums = torch.zeros(4, dtype=torch.float32, device=device)  # loss, grad norm, finite steps, bad steps
        self._extras: dict[str, Tensor] = {}  # the objective's extra scalars, summed over the finite steps
        self._t0, self._steps = time.perf_counter(), 0

    def add(self, loss: Tensor, grad_norm: Tensor, bad: Tensor, extras: dict[str, Tensor] | None = None) -> None:
        ok = (~bad).to(torch.float32)
        zero = torch.zeros((), dtype=torch.float32, device=self.device)
        loss = torch.where(bad, zero, loss.detach().to(torch.float32))
        grad_norm = torch.where(bad, zero, grad_norm.detach().to(self.device, torch.float32))
        self._sums += torch.stack([loss, grad_norm, ok, 1.0 - ok])
        for name, value in (extras or {}).items():
            value = torch.where(bad, zero, torch.as_tensor(value).detach().to(self.device, torch.float32).mean())
            self._extras[name] = self._extras.get(name, zero) + value
        self._steps += 1

    def flush(self, global_batch: int) -> dict[str, float]:
        """Means since the last flush over all ranks, and throughput (a sync; every rank must call it)."""
        names = sorted(self._extras)
        packed = torch.cat([self._sums, *(self._extras[n].reshape(1) for n in names)])
        sums = distributed.sum_device_(packed).tolist()
        world = torch.distributed.get_world_size() if distributed.active() else 1
        loss, grad_norm, finite, bad = sums[:4]  # finite and bad steps agree across ranks
        now = time.perf_counter()
        dt = max(now - self._t0, 1e-9)
        record = {
            "loss": loss / finite if finite else float("nan"),
            "grad_norm": grad_norm / finite if finite else float("nan"),
            "skipped": int(round(bad / world)),
            "steps_per_s": self._steps / dt,
            "img_per_s": self._steps * global_batch / dt,
        }
        for name, total in zip(names, sums[4:]):  # every rank logs the same names (the same objective)
            record[name] = total / finite if finite else float("nan")
        self._extras = {}
        self._sums.zero_()
        self._t0, self._steps = now, 0
        return record
