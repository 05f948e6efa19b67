"""The IDX files of MNIST and Fashion-MNIST (LeCun et al. 1998), read without torchvision.

An IDX file is a big-endian header (a magic number, 2051 for uint8 images
or 2049 for uint8 labels, then one int32 per dimension) followed by the
bytes. :func:`idx_header` reads only the header, so ``gentool check`` learns
a split's size in a millisecond instead of decompressing its images.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch
from torch import Tensor

from gentool_data.common import download_errors, missing, split_shape

IDX_MAGIC = {2051: 3, 2049: 1}  # uint8 images (3-D) and labels (1-D)


def idx_names(split: str) -> tuple[str, str]:
    """The IDX file names (images, labels) of a split, without ``.gz``."""
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def find_idx(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists first; None if neither."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _open(path: Path):
    return (gzip.open if path.suffix == ".gz" else open)(path, "rb")


def _parse_header(path: Path, data: bytes) -> tuple[int, ...]:
    magic = struct.unpack(">i", data[:4])[0] if len(data) >= 4 else None
    if magic not in IDX_MAGIC:
        raise ValueError(f"{path} is not a uint8 IDX file (magic number {magic}, expected 2051 or 2049)")
    ndim = IDX_MAGIC[magic]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: the IDX header is cut short")
    return struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])


def idx_header(path: Path) -> tuple[int, ...]:
    """The shape a uint8 IDX file (gzipped if the name ends in ``.gz``) declares, reading only its header."""
    with _open(path) as f:
        return _parse_header(path, f.read(16))


def read_idx(path: Path) -> Tensor:
    """A uint8 IDX file (gzipped if the name ends in ``.gz``) as a tensor."""
    with _open(path) as f:
        data = f.read()
    shape = _parse_header(path, data)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=4 + 4 * len(shape)).view(shape)


def idx_split_shape(images: Path, labels: Path, image_size: int | None) -> tuple[int, int, int, int]:
    """``(N, 1, H, W)`` of the split in these two files, from their headers alone (resized to ``image_size``)."""
    image_dims, label_dims = idx_header(images), idx_header(labels)
    if len(image_dims) != 3 or len(label_dims) != 1:
        raise ValueError(f"{images} and {labels} must hold images (N x H x W) and labels (N), "
                         f"got {image_dims} and {label_dims}")
    (n, height, width), (n_labels,) = image_dims, label_dims
    if n != n_labels:
        raise ValueError(f"{images.parent}: {n} images but {n_labels} labels")
    return split_shape(n, (1, height, width), image_size)


def load_torchvision(name: str, split: str, root: str, download: bool, *, label: str = "", hint: str = ""):
    """``(images uint8 [N, 1, 28, 28], labels [N])`` from ``<root>/<name>/raw/`` by ``torchvision.datasets.<name>``.

    ``label`` names the data set in errors (default ``name``); ``hint`` ends
    the message of a failed download (other ways to get the files).
    """
    import torchvision.datasets  # start-up: see gentool_data.common

    cls = getattr(torchvision.datasets, name)
    raw = Path(root) / name / "raw"
    what = f"{label or name} {split} split"
    if not download and not all((raw / file).is_file() for file in idx_names(split)):
        raise missing(what, [raw])
    if not download:
        data = cls(root, train=split == "train", download=False)
    else:
        names = ", ".join(file for s in ("train", "test") for file in idx_names(s))
        fix = f"without network access, put the uncompressed IDX files ({names}) in {raw}{hint}"
        with download_errors(what, root, fix, folder=raw):
            data = cls(root, train=split == "train", download=True)
    return data.data.unsqueeze(1), data.targets
