"""CIFAR-10 (Krizhevsky 2009) through torchvision, kept as uint8 in memory.

torchvision is imported when the files are loaded, not with the module (see
:mod:`gentool_data.common`); :func:`cifar10_shape` looks only at the files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gentool_data.common import MissingDataError, TensorImages, check_split, download_errors, missing, split_shape

#: torchvision's ``CIFAR10.base_folder``: the folder the archive unpacks to, under ``root``.
FOLDER = "cifar-10-batches-py"
#: The pickled batches of each split, 10,000 images of 3 x 32 x 32 bytes each.
BATCHES = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
BATCH_IMAGES = 10_000


def cifar10(
    split: str,
    *,
    root: str = "data",
    download: bool = False,
    image_size: int | None = None,
    random_flip: bool = False,
) -> TensorImages:
    """Small colour photos, 3 x 32 x 32, 10 classes (50,000 train / 10,000 test).

    torchvision checks the files' md5 sums, so a damaged copy is refused.

    Args:
        root: folder holding torchvision's copy (``<root>/cifar-10-batches-py/``).
        download: fetch and unpack the archive into ``root`` if it is missing.
        image_size: resize to this square size (None: keep 32).
        random_flip: flip training images left-right with probability 1/2
            (as Ho et al. 2020 did for CIFAR-10); the test split is never flipped.
    """
    check_split(split)
    from torchvision.datasets import CIFAR10  # start-up: see gentool_data.common

    folder = Path(root) / FOLDER
    if not download and not folder.is_dir():
        raise missing(f"CIFAR-10 {split} split", [folder])
    if download:
        fix = (f"without network access, put the unpacked python version of CIFAR-10 ({CIFAR10.url}) "
               f"in {folder} (data_batch_1 ... data_batch_5, test_batch, batches.meta)")
        with download_errors(f"CIFAR-10 {split} split", root, fix):
            data = CIFAR10(root, train=split == "train", download=True)
    else:
        try:
            data = CIFAR10(root, train=split == "train", download=False)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted" (a file missing or its md5 wrong)
            raise MissingDataError(
                f"CIFAR-10 {split} split: the files in {folder} are incomplete or damaged (torchvision: {err}); "
                f"replace them with the unpacked python version of CIFAR-10 ({CIFAR10.url}), or delete the "
                "folder and set `download = true` in [data]") from None
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
    labels = torch.as_tensor(data.targets)
    flip = random_flip and split == "train"
    return TensorImages(images, labels, data.classes, image_size=image_size, random_flip=flip,
                        mirror_invariant=True)


def cifar10_shape(split: str, *, root: str, download: bool, image_size: int | None,
                  random_flip: bool) -> tuple[int, ...] | None:
    """``(N, 3, H, W)`` of the split :func:`cifar10` would load: 10,000 images per batch file.

    None when only loading can tell: before a download, or when a batch file
    is missing or too small to hold 10,000 images (the loader names the damage).
    """
    check_split(split)
    folder = Path(root) / FOLDER
    if not download and not folder.is_dir():
        raise missing(f"CIFAR-10 {split} split", [folder])
    files = [folder / name for name in BATCHES[split]]
    if not all(f.is_file() and f.stat().st_size >= BATCH_IMAGES * 3 * 32 * 32 for f in files):
        return None
    return split_shape(len(files) * BATCH_IMAGES, (3, 32, 32), image_size)


cifar10.shape = cifar10_shape
