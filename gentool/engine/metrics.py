"""Training metrics: accumulated on the device every step, read and written every ``log_every``.

``metrics.jsonl`` in the run directory has one JSON object per line, each
with a ``step``: training lines (``loss``, ``lr``, ``grad_norm``,
``steps_per_s``, ``img_per_s``, ``skipped``), test-loss lines
(``test_loss/t=<t>``) and evaluation lines (``eval/<metric>``).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gentool.engine import distributed

METRICS = "metrics.jsonl"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file; a line cut short by a crash is ignored."""
    out = []
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "step" in record:
                out.append(record)
    return out


class MetricsLog:
    """Appends records to ``metrics.jsonl``; on resume it first drops lines after the resumed step."""

    def __init__(self, path: Path, start_step: int) -> None:
        self.path = Path(path)
        keep = [r for r in read_metrics(self.path) if r["step"] <= start_step] if start_step > 0 else []
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
        os.replace(tmp, self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; NaN and infinities are written as null (strict JSON)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class StepStats:
    """Sums of loss and gradient norm over the finite steps since the last :meth:`flush` (no sync)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sums = torch.zeros(4, dtype=torch.float32, device=device)  # loss, grad norm, finite steps, bad steps
        self._t0, self._steps = time.perf_counter(), 0

    def add(self, loss: Tensor, grad_norm: Tensor, bad: Tensor) -> None:
        ok = (~bad).to(torch.float32)
        zero = torch.zeros((), dtype=torch.float32, device=self.device)
        loss = torch.where(bad, zero, loss.detach().to(torch.float32))
        grad_norm = torch.where(bad, zero, grad_norm.detach().to(self.device, torch.float32))
        self._sums += torch.stack([loss, grad_norm, ok, 1.0 - ok])
        self._steps += 1

    def flush(self, global_batch: int) -> dict[str, float]:
        """Means since the last flush over all ranks, and throughput (a sync; every rank must call it)."""
        sums = distributed.sum_device_(self._sums.clone()).tolist()
        world = torch.distributed.get_world_size() if distributed.active() else 1
        loss, grad_norm, finite, bad = sums  # finite and bad steps agree across ranks
        now = time.perf_counter()
        dt = max(now - self._t0, 1e-9)
        record = {
            "loss": loss / finite if finite else float("nan"),
            "grad_norm": grad_norm / finite if finite else float("nan"),
            "skipped": int(round(bad / world)),
            "steps_per_s": self._steps / dt,
            "img_per_s": self._steps * global_batch / dt,
        }
        self._sums.zero_()
        self._t0, self._steps = now, 0
        return record
