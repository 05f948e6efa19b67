"""Tiny synthetic data sets for tests and teaching, made from a seed."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from gentool_data.common import TensorImages, check_split

BRIGHT, DARK, NOISE = 0.8, -0.8, 0.05


def blobs(labels: Tensor, size: int, channels: int, num_classes: int, g: torch.Generator) -> Tensor:
    """Class ``k`` is bright in the ``k``-th of ``num_classes`` vertical stripes."""
    cols = torch.arange(size)
    stripe = cols * num_classes // size  # which class owns each column
    bright = stripe[None, :] == labels[:, None]  # [N, W]
    x = torch.where(bright, BRIGHT, DARK)[:, None, None, :].expand(-1, channels, size, -1)
    x = x + NOISE * torch.randn(x.shape, generator=g)
    return x.clamp(-1, 1)


def two_points(labels: Tensor, size: int, channels: int) -> Tensor:
    """Every image is -0.5 (label 0) or +0.5 (label 1) everywhere."""
    x = labels.to(torch.float32) - 0.5
    return x[:, None, None, None].expand(-1, channels, size, size).contiguous()


def toy(
    split: str,
    *,
    n: int = 256,
    image_size: int = 8,
    channels: int = 1,
    num_classes: int = 2,
    seed: int = 0,
    kind: Literal["blobs", "two_points"] = "blobs",
) -> TensorImages:
    """A small synthetic data set, identical for identical options.

    "blobs": class ``k`` has a bright vertical stripe (the ``k``-th of
    ``num_classes``; with two classes the left or right half) on a dark
    background plus a little Gaussian noise, learnable in seconds.
    "two_points": every image is the constant -0.5 (label 0) or +0.5 (label 1),
    a data distribution whose optimal denoiser is known in closed form.
    The train split uses the seed ``2 * seed``, the test split ``2 * seed + 1``.

    Args:
        n: number of images in each split.
        image_size: height and width in pixels.
        channels: number of channels (the pattern is the same in each).
        num_classes: number of classes for "blobs" (at most ``image_size``);
            "two_points" always has 2.
        seed: the random seed (labels and noise).
        kind: "blobs" or "two_points".
    """
    check_split(split)
    if n < 1 or image_size < 1 or channels < 1:
        raise ValueError(f"n, image_size and channels must be positive, got {n}, {image_size}, {channels}")
    if kind == "two_points" and num_classes != 2:
        raise ValueError(f"kind 'two_points' has exactly 2 classes, got num_classes = {num_classes}")
    if kind == "blobs" and not 1 <= num_classes <= image_size:
        raise ValueError(f"num_classes must be between 1 and image_size ({image_size}), got {num_classes}")
    g = torch.Generator().manual_seed(2 * seed + (split == "test"))
    labels = torch.randint(num_classes, (n,), generator=g)
    if kind == "blobs":
        images = blobs(labels, image_size, channels, num_classes, g)
    elif kind == "two_points":
        images = two_points(labels, image_size, channels)
    else:
        raise ValueError(f"kind must be 'blobs' or 'two_points', got {kind!r}")
    classes = [f"stripe {k}" for k in range(num_classes)] if kind == "blobs" else ["-0.5", "+0.5"]
    return TensorImages(images, labels, classes)
