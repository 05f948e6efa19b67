"""The trainable model: a denoiser plus an optional conditioner, and what its output means."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gentool.errors import DataError
from gentool.parameterisation import CLASSIC


class DiffusionModel(nn.Module):
    """Denoiser and conditioner as one module (one optimiser, one EMA, one checkpoint).

    ``model(x_in, c_noise, labels)`` returns the denoiser's raw output, which
    the ``parameterisation`` (:class:`gentool.Parameterisation`) turns into a
    :class:`gentool.Denoised` record, followed along the channels by the
    variance interpolation when ``learned_variance``. Both come from the
    recipe's ``[objective]`` (:func:`gentool.run.build` passes them) and are
    stored with the checkpoints. ``x_in`` and ``c_noise`` are what the
    parameterisation's ``inputs`` make of (x_t, t) (for the classic ones on the
    discrete chain: x_t and the integer step). ``labels`` is an int64 tensor
    ``[B]`` (``-1``: null label) or ``None`` for an unconditional model.
    """

    def __init__(self, denoiser: nn.Module, conditioner: nn.Module | None = None, *,
                 parameterisation: Any = None, learned_variance: bool = False, prediction: str | None = None) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.conditioner = conditioner
        if parameterisation is None:  # a denoiser built outside a recipe may still say what it predicts
            parameterisation = CLASSIC[prediction or getattr(denoiser, "prediction", "eps")]
        self.parameterisation = parameterisation
        self.learned_variance = bool(learned_variance)

    @property
    def prediction(self) -> str:
        """The parameterisation's name (``"eps"``, ``"x0"``, ``"v"`` or a plugin's)."""
        return str(self.parameterisation.name)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.conditioner, "num_classes", 0)) if self.conditioner is not None else 0

    def check_labels(self, labels: Tensor | list[int]) -> None:
        """Raise ``ValueError`` unless every label is a class ``0..num_classes-1`` or ``-1`` (null).

        This reads the labels on the host: call it where labels enter (the
        data set, a user's request), on CPU tensors, not inside a training or
        sampling step (on a GPU that would wait for the device every step).
        """
        n = self.num_classes
        labels = torch.as_tensor(labels)
        if self.conditioner is None or not n or labels.numel() == 0:
            return
        bad = (labels < -1) | (labels >= n)
        if bool(bad.any()):
            raise DataError(f"class labels must be in 0..{n - 1} (or -1 for none), "
                             f"got {sorted(set(labels[bad].tolist()))[:10]}")

    def embed(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        """The conditioner's embedding of ``labels`` (``None``: ``batch`` null labels); ``None`` when unconditional."""
        if self.conditioner is None:
            return None
        if labels is None:
            labels = torch.full((batch,), -1, dtype=torch.long, device=device)
        return self.conditioner(labels)

    def forward(self, x_in: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.denoiser(x_in, c_noise, self.embed(labels, x_in.shape[0], x_in.device))
