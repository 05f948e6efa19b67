"""The trainable model: a denoiser plus an optional conditioner."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gentool.errors import DataError


class DiffusionModel(nn.Module):
    """Denoiser and conditioner as one module (one optimiser, one EMA, one checkpoint).

    ``model(x_t, t, labels)`` returns the denoiser's raw output: a
    ``prediction`` (``"eps"``, ``"x0"`` or ``"v"``), followed along the
    channels by the variance interpolation when ``learned_variance``. Both come
    from the recipe's ``[objective]`` (:func:`gentool.run.build` passes them);
    samplers learn the prediction target from here. ``labels`` is an int64
    tensor ``[B]`` (``-1``: null label) or ``None`` for an unconditional model.
    """

    def __init__(self, denoiser: nn.Module, conditioner: nn.Module | None = None, *,
                 prediction: str | None = None, learned_variance: bool = False) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.conditioner = conditioner
        # a denoiser built outside a recipe may still say what it predicts
        self.prediction: str = prediction or getattr(denoiser, "prediction", "eps")
        self.learned_variance = bool(learned_variance)

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

    def forward(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.denoiser(x_t, t, self.embed(labels, x_t.shape[0], x_t.device))
