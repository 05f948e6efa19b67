"""Saving images: [-1, 1] tensors to PNG files and grids (torchvision does the work).

torchvision is imported when an image is saved, not with the module: its
import pulls in ``torch._dynamo`` (about 2.5 s), and every task module imports
this one, so ``gentool check`` (which loads the tasks) would pay for it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)


def to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] float -> uint8 [0, 255] the way PNG files quantise it."""
    return (to_unit(x) * 255).round().to(torch.uint8)


def make_grid(x: Tensor, **options) -> Tensor:
    """``torchvision.utils.make_grid``: a batch ``[B, C, H, W]`` as one ``[C, H', W']`` image."""
    from torchvision.utils import make_grid as tv_make_grid  # start-up: see the module's docstring

    return tv_make_grid(x, **options)


def grid_of(x: Tensor, nrow: int | None = None, padding: int = 2) -> Tensor:
    """A batch ``[B, C, H, W]`` in [-1, 1] as one ``[C, H', W']`` grid in [0, 1], as :func:`save_grid` draws it."""
    nrow = nrow or max(1, math.ceil(math.sqrt(x.shape[0])))
    return make_grid(to_unit(x), nrow=nrow, padding=padding)


def save_png(image: Tensor, path: Path, **grid: int) -> Path:
    """``torchvision.utils.save_image`` to ``path`` atomically: a full disk leaves no partial PNG."""
    from torchvision.utils import save_image  # start-up: see the module's docstring

    from gentool.atomic import atomic_write

    return atomic_write(path, lambda f: save_image(image, f, format="png", **grid))


def save_grid(x: Tensor, path: Path, nrow: int | None = None, padding: int = 2) -> Path:
    """Save a batch ``[B, C, H, W]`` in [-1, 1] as one PNG grid."""
    nrow = nrow or max(1, math.ceil(math.sqrt(x.shape[0])))
    return save_png(to_unit(x), path, nrow=nrow, padding=padding)


def save_images(x: Tensor, folder: Path, prefix: str = "") -> list[Path]:
    """Save each image of a batch as ``folder/{prefix}{i:05d}.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_unit(x)):
        paths.append(save_png(img, folder / f"{prefix}{i:05d}.png"))
    return paths


__all__ = ["grid_of", "make_grid", "save_grid", "save_images", "to_uint8", "to_unit"]
