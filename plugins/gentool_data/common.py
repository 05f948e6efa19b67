"""Pieces shared by the data sources: the missing-data error, a dataset over
an in-memory image tensor and the PIL-to-tensor transform.

Every source returns images as float32 ``[C, H, W]`` in [-1, 1]; a uint8 pixel
``p`` becomes ``p / 127.5 - 1`` so 0 -> -1 and 255 -> 1 exactly.

torchvision is imported inside the functions that resize or transform: its
import pulls in ``torch._dynamo`` (about 2.5 s), and the plugins are loaded
by every command, ``gentool check`` included, which never resizes an image.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gentool import DOWNLOAD_ERRORS, GentoolError, brief

if TYPE_CHECKING:
    from PIL import Image
    from torchvision.transforms import v2

SPLITS = ("train", "test")


class MissingDataError(GentoolError, FileNotFoundError):
    """The files of a data set are not where the recipe says they are."""


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def check_image_size(image_size: int | None) -> None:
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")


def split_shape(n: int, image: tuple[int, int, int], image_size: int | None) -> tuple[int, int, int, int]:
    """``(N, C, H, W)`` of ``n`` images of shape ``image`` (C, H, W), resized to ``image_size`` squares if given.

    What a data source's ``shape`` attribute returns (see :class:`gentool.DataSource`).
    """
    check_image_size(image_size)
    channels, height, width = image
    return (n, channels, image_size, image_size) if image_size is not None else (n, channels, height, width)


def missing(what: str, looked: Sequence[Path | str], hint: str = "") -> MissingDataError:
    """An error naming every place that was searched and how to get the data."""
    places = ", ".join(str(p) for p in looked)
    fix = "set `download = true` in [data] to fetch it"
    return MissingDataError(f"{what} not found (looked in {places}); {fix}{hint}")


@contextmanager
def download_errors(what: str, root: Path | str, fix: str, *, folder: Path | str | None = None) -> Iterator[None]:
    """Turn a failed download inside the block into a :class:`MissingDataError`.

    The message names ``what``, ``root``, the cause in brief and ``fix`` (how to
    get the files without a download). Folders the failed download created
    under ``folder`` (default ``root``) are removed again when left empty.
    """
    target = Path(folder if folder is not None else root)
    created = next((p for p in [*reversed(target.parents), target] if not p.exists()), None)
    try:
        yield
    except DOWNLOAD_ERRORS as exc:
        if isinstance(exc, MissingDataError):
            raise
        if created is not None:
            _remove_empty(target, created)
        raise MissingDataError(
            f"{what}: not found in the root folder {root} and the download failed ({brief(exc)}); {fix}, "
            "or run again where the network is reachable"
        ) from exc


def _remove_empty(deepest: Path, top: Path) -> None:
    """rmdir ``deepest`` and its parents up to ``top`` (inclusive), stopping at the first non-empty one."""
    for folder in [deepest, *deepest.parents]:
        if folder.is_dir():
            try:
                folder.rmdir()
            except OSError:  # not empty: the download left something there
                return
        if folder == top:
            return


def to_signed(x: Tensor) -> Tensor:
    """uint8 pixels to float32 in [-1, 1]."""
    return x.to(torch.float32) / 127.5 - 1.0


class TensorImages(Dataset):
    """``(image, label)`` pairs from an in-memory tensor.

    ``images`` is uint8 ``[N, C, H, W]`` (scaled to [-1, 1] per item) or float
    already in [-1, 1]; ``labels`` is int ``[N]``. Resizing (``image_size``)
    and flipping (``random_flip``) happen per item, so the tensor stays small.
    ``mirror_invariant`` says a left-right mirror image has the same class (garments,
    CIFAR-10's objects; not digits): tools that augment, such as ``gentool features
    train``, flip only such data by default.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        classes: list[str] | None = None,
        *,
        image_size: int | None = None,
        random_flip: bool = False,
        mirror_invariant: bool = False,
    ):
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"need images [N, C, H, W] and labels [N], got {tuple(images.shape)}, {tuple(labels.shape)}")
        check_image_size(image_size)
        self.images = images
        self.labels = labels.to(torch.int64)
        self.classes = list(classes) if classes is not None else []
        self.image_size = image_size
        self.random_flip = random_flip
        self.mirror_invariant = mirror_invariant

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self.images[i]
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size,) * 2:
            from torchvision.transforms.v2 import functional as TF  # start-up: see the module's docstring

            x = TF.resize(x, [self.image_size, self.image_size], antialias=True)
        if self.random_flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        if x.dtype == torch.uint8:
            x = to_signed(x)
        return x, int(self.labels[i])


def _convert(image: Image.Image, mode: str) -> Image.Image:
    return image.convert(mode)


def pil_transform(image_size: int, channels: int, random_flip: bool) -> v2.Compose:
    """PIL image -> float32 ``[channels, image_size, image_size]`` in [-1, 1].

    Resizes the shorter side to ``image_size`` and crops the centre square.
    """
    from torchvision.transforms import v2  # start-up: see the module's docstring

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    check_image_size(image_size)
    steps = [
        v2.Lambda(partial(_convert, mode="L" if channels == 1 else "RGB")),
        v2.Resize(image_size, antialias=True),
        v2.CenterCrop(image_size),
    ]
    if random_flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * channels, [0.5] * channels)]
    return v2.Compose(steps)
