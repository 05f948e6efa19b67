"""MNIST (LeCun et al. 1998) through torchvision, kept as uint8 in memory.

torchvision is imported when the files are loaded, not with the module (see
:mod:`gentool_data.common`); :func:`mnist_shape` reads only the IDX headers.
"""

from __future__ import annotations

from pathlib import Path

from gentool_data.common import TensorImages, check_split, missing
from gentool_data.idx import idx_names, idx_split_shape, load_torchvision

#: torchvision's ``MNIST.classes``.
CLASSES = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
           "8 - eight", "9 - nine"]


def mnist(
    split: str,
    *,
    root: str = "data",
    download: bool = False,
    image_size: int | None = None,
) -> TensorImages:
    """Handwritten digits, 1 x 28 x 28, 10 classes (60,000 train / 10,000 test).

    Args:
        root: folder holding torchvision's copy (``<root>/MNIST/raw/``).
        download: fetch the files into ``root`` if they are missing.
        image_size: resize to this square size (None: keep 28).
    """
    check_split(split)
    images, labels = load_torchvision("MNIST", split, root, download)
    return TensorImages(images, labels, CLASSES, image_size=image_size)


def mnist_shape(split: str, *, root: str, download: bool, image_size: int | None) -> tuple[int, ...] | None:
    """``(N, 1, H, W)`` of the split :func:`mnist` would load, from the IDX headers; None before a download."""
    check_split(split)
    raw = Path(root) / "MNIST" / "raw"
    paths = [raw / name for name in idx_names(split)]
    if not all(p.is_file() for p in paths):
        if download:
            return None
        raise missing(f"MNIST {split} split", [raw])
    return idx_split_shape(*paths, image_size)


mnist.shape = mnist_shape
