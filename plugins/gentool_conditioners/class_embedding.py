"""Class embedding with a null token, for classifier-free guidance (Ho and Salimans 2022)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

NULL_LABEL = -1  # the label that means "no class" everywhere in gentool


class ClassEmbedding(nn.Module):
    """``labels [B] -> [B, dim]``: a learned vector per class, plus the null token.

    Label ``-1`` maps to the null token. In training mode each label is
    replaced by the null token with probability ``p_uncond`` (Ho and Salimans
    2022, Algorithm 1), drawn from torch's global RNG so that a checkpoint's
    saved RNG state covers it. In eval mode labels are never dropped.
    """

    def __init__(self, dim: int, num_classes: int, p_uncond: float, null_token: str) -> None:
        super().__init__()
        self.dim, self.num_classes, self.p_uncond, self.null_token = dim, num_classes, p_uncond, null_token
        self.embedding = nn.Embedding(num_classes, dim)  # N(0, 1) init, as improved-diffusion's label_emb
        if null_token == "learned":
            self.null = nn.Parameter(torch.randn(dim))
        else:  # a constant zero: the unconditional branch sees the bare time embedding
            self.register_buffer("null", torch.zeros(dim))

    def drop_labels(self, labels: Tensor) -> Tensor:
        """Replace each label by ``-1`` with probability ``p_uncond`` (training only)."""
        if not self.training or self.p_uncond <= 0:
            return labels
        drop = torch.rand(labels.shape, device=labels.device) < self.p_uncond
        return torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)

    def forward(self, labels: Tensor) -> Tensor:
        """Embed ``labels`` without reading them back to the host (no device sync per step).

        A class past ``num_classes - 1`` raises (on the CPU a ``ValueError``; on
        a GPU the kernel's bounds check); the engine and ``Run.sample`` check
        labels on the host where they enter (``DiffusionModel.check_labels``).
        """
        labels = torch.as_tensor(labels, device=self.embedding.weight.device).long().flatten()
        labels = self.drop_labels(labels)
        is_null = (labels < 0)[:, None]  # -1; the boundary checks reject any other negative label
        try:
            emb = self.embedding(labels.clamp(min=0))
        except IndexError as err:  # only ever on a bad label: the happy path reads nothing back
            bad = sorted(set(labels[labels >= self.num_classes].tolist()))
            raise ValueError(f"class labels must be in 0..{self.num_classes - 1} (or -1 for none), got {bad}") from err
        return torch.where(is_null, self.null.to(emb.dtype).expand_as(emb), emb)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, p_uncond={self.p_uncond}, null_token={self.null_token!r}"


def class_embedding(
    dim: int,
    *,
    num_classes: int = 10,
    p_uncond: float = 0.1,
    null_token: Literal["learned", "zero"] = "learned",
) -> ClassEmbedding:
    """One embedding vector per class plus a null token, added to the denoiser's time embedding.

    Args:
        num_classes: number of classes; labels are ``0..num_classes-1`` and ``-1`` is "no class".
        p_uncond: probability, per training sample, of replacing its label by
            the null token, so one network learns both eps(x, c) and
            eps(x, null) for classifier-free guidance (Ho and Salimans use 0.1
            or 0.2; 0 trains a purely conditional model that cannot be guided).
        null_token: ``"learned"`` (a trainable vector) or ``"zero"`` (a fixed
            zero vector, so the unconditional branch sees only the time embedding).
    """
    if isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
    if null_token not in ("learned", "zero"):
        raise ValueError(f"null_token must be 'learned' or 'zero', got {null_token!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim (the denoiser's cond_dim) must be a positive integer, got {dim!r}")
    return ClassEmbedding(dim, num_classes, float(p_uncond), null_token)
