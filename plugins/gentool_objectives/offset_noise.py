"""Offset noise (Guttenberg 2023, "Diffusion with Offset Noise"): eps + strength * a per-channel constant.

Plain eps ~ N(0, I) hardly changes an image's mean colour, so a model trained
on it struggles to make images much darker or brighter than average. Adding
one N(0, 1) draw per image and channel, broadcast over the pixels and scaled by
``strength`` (0.1 in the post), lets the noise move the mean too. The sum is
the noise the network sees and the eps it is trained to predict.
"""

from __future__ import annotations

import torch
from torch import Tensor


def offset_noise(noise: Tensor, strength: float, generator: torch.Generator | None) -> Tensor:
    """``noise + strength * z``, z ~ N(0, 1) of shape ``[B, C, 1, 1]`` (drawn after ``noise``, from ``generator``)."""
    if strength == 0:
        return noise
    offset = torch.randn((*noise.shape[:2], *[1] * (noise.ndim - 2)), generator=generator,
                         device=noise.device, dtype=noise.dtype)
    return noise + strength * offset


def check_strength(strength: float) -> None:
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not strength >= 0:
        raise ValueError(f"offset_noise must be a number >= 0, got {strength!r}")
