"""MNIST (LeCun et al. 1998) through torchvision, kept as uint8 in memory."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import MNIST

from gentool_data.common import TensorImages, check_split, download_errors, missing


def idx_names(split: str) -> tuple[str, str]:
    """The IDX file names (images, labels) of a split, without ``.gz``."""
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def load_torchvision(cls: type[MNIST], split: str, root: str, download: bool, *, label: str = "", hint: str = ""):
    """``(images uint8 [N, 1, 28, 28], labels [N])`` from ``<root>/<cls name>/raw/``.

    ``label`` names the data set in errors (default the class name); ``hint``
    ends the message of a failed download (other ways to get the files).
    """
    raw = Path(root) / cls.__name__ / "raw"
    what = f"{label or cls.__name__} {split} split"
    if not download and not all((raw / name).is_file() for name in idx_names(split)):
        raise missing(what, [raw])
    if not download:
        data = cls(root, train=split == "train", download=False)
    else:
        names = ", ".join(name for s in ("train", "test") for name in idx_names(s))
        fix = f"without network access, put the uncompressed IDX files ({names}) in {raw}{hint}"
        with download_errors(what, root, fix, folder=raw):
            data = cls(root, train=split == "train", download=True)
    return data.data.unsqueeze(1), data.targets


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
    images, labels = load_torchvision(MNIST, split, root, download)
    return TensorImages(images, labels, MNIST.classes, image_size=image_size)
