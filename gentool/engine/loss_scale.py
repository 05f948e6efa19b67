"""fp16 training: float16 autocast with dynamic loss scaling (Micikevicius et al. 2018, "Mixed Precision Training").

float16 has 5 exponent bits: gradients below about 6e-8 flush to zero and
values above 65504 overflow. The loss is multiplied by a scale S before the
backward pass, so small gradients survive, and the gradients are divided by S
before clipping and the optimiser step. A step whose gradients overflowed
(an inf or NaN after unscaling) is skipped and S halves; after 2000 steps
without overflow S doubles (``torch.amp.GradScaler``'s defaults). bf16 has
float32's exponent range and needs none of this: ``[train] precision = "auto"``
picks bf16 on GPUs that run it fast (compute capability 8.0 or higher) and
fp16 with loss scaling on older ones (T4, V100).

A skipped overflow step is not a non-finite *loss*: ``[train] on_nan`` does
not stop the run for it; the step counts in ``skipped`` and ``loss_scale`` is
logged. The scale is saved in checkpoints so that a resumed run continues
with it.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: the first loss scale (GradScaler's default, 2 ** 16)
INIT_SCALE = 2.0**16


class LossScaler:
    """``torch.amp.GradScaler`` for the train loop; every method is a no-op when not ``enabled``."""

    def __init__(self, enabled: bool, device: torch.device, init_scale: float | None = None) -> None:
        self.enabled = bool(enabled)
        self.scaler = torch.amp.GradScaler(torch.device(device).type, enabled=self.enabled,
                                           init_scale=INIT_SCALE if init_scale is None else init_scale)

    def scale(self, loss: Tensor) -> Tensor:
        """``loss * S`` to backpropagate (``loss`` itself when off)."""
        return self.scaler.scale(loss) if self.enabled else loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by S in place (before clipping) and record whether any overflowed."""
        if self.enabled:
            self.scaler.unscale_(optimizer)

    def overflow(self, optimizer: torch.optim.Optimizer, like: Tensor) -> Tensor:
        """A bool tensor (on ``like``'s device, no sync): the unscaled gradients hold an inf or NaN."""
        if not self.enabled:
            return torch.zeros((), dtype=torch.bool, device=like.device)
        found = self.scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"]  # set by unscale_
        return sum(v.to(like.device) for v in found.values()) > 0

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """The optimiser step unless the gradients overflowed, then the scale update (halve or grow).

        Returns whether the step was skipped (reads the overflow flag: a device sync).
        """
        found = self.scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"]
        skipped = bool(sum(float(v) for v in found.values()))
        self.scaler.step(optimizer)
        self.scaler.update()
        return skipped

    def update(self) -> None:
        """Update the scale without a step (a step skipped for a non-finite loss)."""
        if self.enabled:
            self.scaler.update()

    def get_scale(self) -> float:
        return float(self.scaler.get_scale()) if self.enabled else 1.0

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.enabled else {}

    def load_state_dict(self, state: dict) -> None:
        if self.enabled and state:
            self.scaler.load_state_dict(state)
