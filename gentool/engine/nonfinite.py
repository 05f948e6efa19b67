"""Non-finite losses: stop the run naming the step, or skip the step (``train.on_nan``).

On the CPU the check is immediate (reading a flag costs nothing). On CUDA the
flag stays on the device: the fused AdamW skips its update when told through
``found_inf`` (the same mechanism AMP's GradScaler uses), the EMA update is
gated the same way, and the host reads the flag only at log and checkpoint
steps, so a healthy run never waits on the GPU for it. Either way no weight
is ever touched by a non-finite step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gentool.errors import GentoolError


class NonFiniteLossError(GentoolError, RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


def deferred_checks(device: torch.device) -> bool:
    """Whether non-finite steps are gated on the device and read back only now and then."""
    return device.type == "cuda"


class NonFiniteGuard:
    """Tracks non-finite steps; with ``deferred`` it never syncs until :meth:`pending` is called."""

    def __init__(self, on_nan: str, deferred: bool, device: torch.device) -> None:
        self.on_nan, self.deferred = on_nan, deferred
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.skipped = 0

    def record(self, bad: Tensor, step: int) -> None:
        """Remember ``step`` (1-based) if it is the first bad one since the last check (no sync)."""
        self.first_bad = torch.where((self.first_bad < 0) & bad, torch.full_like(self.first_bad, step),
                                     self.first_bad)

    def pending(self) -> int | None:
        """The first bad step recorded since the last call (a sync), or None."""
        step = int(self.first_bad)
        self.first_bad.fill_(-1)
        return step if step >= 0 else None

    def error(self, step: int, checkpoint: Path | None, detected_at: int | None = None) -> NonFiniteLossError:
        late = f" (seen at step {detected_at}; no weight was changed by it)" if detected_at not in (None, step) else ""
        return NonFiniteLossError(
            f"non-finite loss at step {step}{late}; training stopped. The last good checkpoint is "
            f"{checkpoint or '(none yet)'}. Lower train.lr, keep train.grad_clip on, or set "
            f'train.on_nan = "skip" to skip such steps'
        )
