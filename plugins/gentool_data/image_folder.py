"""A folder of image files, with or without class subfolders.

torchvision is imported when a folder is read, not with the module (see
:mod:`gentool_data.common`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from gentool_data.common import MissingDataError, check_split, pil_transform


def image_extensions() -> tuple[str, ...]:
    """The file name endings read as images: torchvision's ``IMG_EXTENSIONS``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS  # start-up: see gentool_data.common

    return IMG_EXTENSIONS


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in image_extensions()


class FlatImages(Dataset):
    """The images directly inside ``folder`` (sorted by name), label -1."""

    def __init__(self, folder: Path, transform: Callable):
        self.files = sorted(p for p in folder.iterdir() if is_image(p))
        if not self.files:
            raise MissingDataError(f"no image files ({', '.join(image_extensions())}) in {folder}")
        self.transform = transform
        self.classes: list[str] = []

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image  # start-up: imported where an image is read

        with Image.open(self.files[i]) as image:
            return self.transform(image), -1


def split_folder(root: Path, split: str) -> Path:
    """``root/<split>`` when root has both ``train/`` and ``test/``, else root."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root / split
    return root


def image_folder(
    split: str,
    *,
    root: str,
    image_size: int = 64,
    channels: int = 3,
    random_flip: bool = False,
) -> Dataset:
    """Your own images: a flat folder (label -1) or one subfolder per class.

    With class subfolders (``root/cat/1.png``, ``root/dog/2.jpg``) the labels
    are the subfolders' indices in sorted order (torchvision's ImageFolder);
    files directly inside ``root`` are then ignored. If ``root`` has both a
    ``train/`` and a ``test/`` subfolder, each split reads its own; otherwise
    both splits read the same images.

    Args:
        root: the folder of images.
        image_size: the shorter side is resized to this, then the centre
            square is cropped.
        channels: 3 for RGB, 1 for grey.
        random_flip: flip training images left-right with probability 1/2.
    """
    check_split(split)
    folder = split_folder(Path(root), split)
    if not folder.is_dir():
        raise MissingDataError(f"image folder {folder} does not exist (check `root` in [data])")
    transform = pil_transform(image_size, channels, random_flip and split == "train")
    if any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        from torchvision.datasets import ImageFolder  # start-up: see gentool_data.common

        return ImageFolder(str(folder), transform=transform)
    return FlatImages(folder, transform)
