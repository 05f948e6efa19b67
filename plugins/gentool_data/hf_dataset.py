"""Image data sets of the Hugging Face hub (or saved locally) via ``datasets``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from gentool_data.common import check_split, pil_transform

SPLIT_SEED = 0  # the fixed seed of the ``test_fraction`` hold-out


def import_datasets():
    try:
        import datasets
    except ImportError as err:
        raise ImportError("the hf_dataset source needs the optional `datasets` library: pip install gentool[hf]") from err
    return datasets


def load_splits(path: str, config: str | None, cache_dir: str | None) -> dict[str, Any]:
    """Every split of ``path``: a ``save_to_disk`` folder, a folder of images or a hub name."""
    datasets = import_datasets()
    folder = Path(path)
    if folder.is_dir() and any((folder / f).is_file() for f in ("dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(str(folder))
    elif folder.is_dir():
        loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), cache_dir=cache_dir)
    else:
        loaded = datasets.load_dataset(path, config, cache_dir=cache_dir)
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def pick_split(splits: dict[str, Any], split: str, train_split: str, test_split: str, test_fraction: float):
    """The hf split serving gentool's ``split``, carving out a test share if asked."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    wanted = train_split if split == "train" or test_fraction > 0 else test_split
    if wanted not in splits:
        hint = " (or set test_fraction to hold out part of the train split)" if split == "test" else ""
        raise ValueError(f"the data set has no split {wanted!r}; it has {sorted(splits)}{hint}")
    data = splits[wanted]
    if test_fraction > 0:
        data = data.train_test_split(test_size=test_fraction, seed=SPLIT_SEED)[split]
    return data


class HFImages(Dataset):
    """``(image, label)`` from a ``datasets.Dataset`` row's image and label columns."""

    def __init__(self, data: Any, image_column: str, label_column: str | None, transform: Callable):
        for column in (image_column, label_column):
            if column is not None and column not in data.column_names:
                raise ValueError(f"no column {column!r}; the data set has {data.column_names}")
        columns = [c for c in (image_column, label_column) if c is not None]
        self.data = data.select_columns(columns)
        self.image_column, self.label_column = image_column, label_column
        self.transform = transform
        names = getattr(data.features.get(label_column), "names", None) if label_column else None
        self.classes: list[str] = list(names or [])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        row = self.data[i]
        image = row[self.image_column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        label = int(row[self.label_column]) if self.label_column else -1
        return self.transform(image), label


def hf_dataset(
    split: str,
    *,
    path: str,
    config: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    test_fraction: float = 0.0,
    image_column: str = "image",
    label_column: str | None = None,
    image_size: int = 128,
    channels: int = 3,
    random_flip: bool = False,
    cache_dir: str | None = None,
) -> Dataset:
    """Images from the Hugging Face hub or a local copy (needs the optional `datasets`).

    Install it with ``pip install gentool[hf]``.

    ``path`` may be a folder written by ``Dataset.save_to_disk`` (loaded with
    ``datasets.load_from_disk``), any other folder (read as an "imagefolder":
    images, optionally in class subfolders) or a hub name such as
    ``"huggan/smithsonian_butterflies_subset"`` (downloaded on first use).
    Many hub data sets have only a "train" split: set ``test_fraction`` to hold
    out a fixed random share of it (seed 0) as the test split.

    Args:
        path: hub name, save_to_disk folder or folder of images.
        config: the hub data set's configuration name, if it has several.
        train_split: the split read for gentool's train split.
        test_split: the split read for gentool's test split (unless
            test_fraction > 0).
        test_fraction: if > 0, both splits come from train_split: this share
            is the test split, the rest the train split.
        image_column: the column holding the images.
        label_column: the column holding integer labels (None: labels are -1);
            a ClassLabel column also provides the class names.
        image_size: the shorter side is resized to this, then the centre
            square is cropped.
        channels: 3 for RGB, 1 for grey.
        random_flip: flip training images left-right with probability 1/2.
        cache_dir: where datasets keeps downloads and Arrow files (None: its
            default, ``~/.cache/huggingface/datasets``).
    """
    check_split(split)
    splits = load_splits(path, config, cache_dir)
    data = pick_split(splits, split, train_split, test_split, test_fraction)
    transform = pil_transform(image_size, channels, random_flip and split == "train")
    return HFImages(data, image_column, label_column, transform)
