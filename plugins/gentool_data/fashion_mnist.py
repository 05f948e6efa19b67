"""Fashion-MNIST (Xiao et al. 2017), offline from Debian's package when present."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import FashionMNIST

from gentool_data.common import TensorImages, check_split, missing
from gentool_data.mnist import idx_names, load_torchvision

#: Where ``apt-get install dataset-fashion-mnist`` puts the gzipped IDX files.
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
IDX_MAGIC = {2051: 3, 2049: 1}  # uint8 images (3-D) and labels (1-D)


def read_idx(path: Path) -> Tensor:
    """A uint8 IDX file (gzipped if the name ends in ``.gz``) as a tensor."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">i", data[:4])[0]
    if magic not in IDX_MAGIC:
        raise ValueError(f"{path} is not a uint8 IDX file (magic number {magic}, expected 2051 or 2049)")
    ndim = IDX_MAGIC[magic]
    shape = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=4 + 4 * ndim).view(shape)


def find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_system(split: str, system_dir: Path) -> tuple[Tensor, Tensor] | None:
    """Images ``[N, 1, 28, 28]`` and labels from ``system_dir``, or None if absent."""
    paths = [find_idx(system_dir, name) for name in idx_names(split)]
    if None in paths:
        return None
    images, labels = (read_idx(p) for p in paths)
    if len(images) != len(labels):
        raise ValueError(f"{system_dir}: {len(images)} images but {len(labels)} labels")
    return images.unsqueeze(1), labels


def fashion_mnist(
    split: str,
    *,
    root: str = "data",
    download: bool = False,
    system_dir: str = DEBIAN_DIR,
    image_size: int | None = None,
) -> TensorImages:
    """Zalando's clothing images, 1 x 28 x 28, 10 classes (60,000 train / 10,000 test).

    Looks first for torchvision's copy in ``<root>/FashionMNIST/raw/``, then for
    the (gzipped) IDX files in ``system_dir``, then downloads if allowed.

    Args:
        root: folder holding torchvision's copy (``<root>/FashionMNIST/raw/``).
        download: fetch the files into ``root`` if neither copy exists.
        system_dir: folder of ``train-images-idx3-ubyte.gz`` etc., as installed
            by Debian's ``dataset-fashion-mnist`` package ("" to skip it).
        image_size: resize to this square size (None: keep 28).
    """
    check_split(split)
    raw = Path(root) / "FashionMNIST" / "raw"
    in_root = all((raw / name).is_file() for name in idx_names(split))
    found = load_system(split, Path(system_dir)) if system_dir and not in_root else None
    if found is None:
        if not (in_root or download):
            hint = ", or run `apt-get install dataset-fashion-mnist`"
            raise missing(f"Fashion-MNIST {split} split", [raw, system_dir or "(no system_dir)"], hint)
        hint = (f", or install Debian's dataset-fashion-mnist package (`apt-get install dataset-fashion-mnist`, "
                f"read from {DEBIAN_DIR}) or set `system_dir` to a folder of the gzipped IDX files")
        found = load_torchvision(FashionMNIST, split, root, download, label="Fashion-MNIST", hint=hint)
    return TensorImages(*found, FashionMNIST.classes, image_size=image_size)
