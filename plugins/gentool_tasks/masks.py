"""Inpainting masks: presets and mask image files.

A mask here is a float tensor ``known`` of shape ``[B, 1, H, W]``: 1 where a
pixel is known (kept from the input), 0 in the hole the model paints in.
Presets name the **hole**: ``"left"`` repaints the left half. In a mask image
file, as in diffusers and LaMa, **white marks the hole** and black the pixels
to keep (grey values are thresholded at the middle).

torchvision is imported where a mask file is read, not with the module (see
:mod:`gentool_tasks.inputs`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

MaskName = Literal["left", "right", "top", "bottom", "centre", "random", "strokes"]
PRESETS: tuple[str, ...] = MaskName.__args__  # type: ignore[attr-defined]


def half(name: str, h: int, w: int) -> Tensor:
    """The hole is one half of the image: ``left``, ``right``, ``top`` or ``bottom``."""
    hole = torch.zeros(h, w, dtype=torch.bool)
    if name == "left":
        hole[:, : w // 2] = True
    elif name == "right":
        hole[:, w // 2 :] = True
    elif name == "top":
        hole[: h // 2] = True
    else:
        hole[h // 2 :] = True
    return hole


def centre_box(h: int, w: int, fraction: float) -> Tensor:
    """A centred box covering ``fraction`` of the area (sides scaled by its square root)."""
    bh, bw = max(1, round(h * math.sqrt(fraction))), max(1, round(w * math.sqrt(fraction)))
    top, left = (h - bh) // 2, (w - bw) // 2
    hole = torch.zeros(h, w, dtype=torch.bool)
    hole[top : top + bh, left : left + bw] = True
    return hole


def random_pixels(h: int, w: int, fraction: float, g: torch.Generator) -> Tensor:
    """Exactly ``round(fraction * H * W)`` pixels, chosen uniformly at random."""
    hole = torch.zeros(h * w, dtype=torch.bool)
    hole[torch.randperm(h * w, generator=g)[: round(fraction * h * w)]] = True
    return hole.view(h, w)


def strokes(h: int, w: int, fraction: float, g: torch.Generator, max_strokes: int = 100) -> Tensor:
    """Random brush strokes (polylines of width ~size/8) until ``fraction`` of the area is covered."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    size = min(h, w)
    width = max(1, round(size / 8))
    rand = lambda: float(torch.rand((), generator=g))  # noqa: E731
    for _ in range(max_strokes):
        if (np.asarray(canvas) > 0).mean() >= fraction:
            break
        x, y = rand() * w, rand() * h
        points = [(x, y)]
        for _ in range(1 + int(rand() * 4)):
            angle, length = rand() * 2 * math.pi, (0.2 + 0.4 * rand()) * size
            x = min(max(x + length * math.cos(angle), 0), w - 1)
            y = min(max(y + length * math.sin(angle), 0), h - 1)
            points.append((x, y))
        draw.line(points, fill=255, width=width, joint="curve")
    return torch.from_numpy(np.asarray(canvas) > 0)


def mask_from_file(path: str | Path, h: int, w: int) -> Tensor:
    """A mask image (white = hole), resized like the inputs (shorter side, centre crop)."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import InterpolationMode  # start-up: see the module's docstring
    from torchvision.transforms.v2 import functional as TF

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mask file")
    try:
        with Image.open(path) as im:
            m = TF.pil_to_tensor(im.convert("L"))
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file Pillow can read") from None
    if tuple(m.shape[-2:]) != (h, w):
        m = TF.resize(m, min(h, w), interpolation=InterpolationMode.NEAREST)
        m = TF.center_crop(m, [h, w])
    return m[0] >= 128


def make_mask(
    n: int,
    size: tuple[int, int],
    *,
    mask: str = "right",
    fraction: float = 0.25,
    mask_file: str = "",
    generator: torch.Generator | None = None,
) -> Tensor:
    """``known`` ``[n, 1, H, W]`` (1 = keep, 0 = hole) from a preset or a mask file.

    The random presets draw a different mask for each image from ``generator``.
    """
    h, w = size
    if mask_file:
        hole = mask_from_file(mask_file, h, w)[None].expand(n, -1, -1)
    else:
        if mask not in PRESETS:
            raise ValueError(f"unknown mask {mask!r}; presets: {', '.join(PRESETS)} (or give a mask file)")
        if mask in ("centre", "random", "strokes") and not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if mask in ("left", "right", "top", "bottom"):
            hole = half(mask, h, w)[None].expand(n, -1, -1)
        elif mask == "centre":
            hole = centre_box(h, w, fraction)[None].expand(n, -1, -1)
        elif mask == "random":
            hole = torch.stack([random_pixels(h, w, fraction, g) for _ in range(n)])
        else:
            hole = torch.stack([strokes(h, w, fraction, g) for _ in range(n)])
    return (~hole)[:, None].float()
