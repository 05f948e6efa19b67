"""Image data sets of the Hugging Face hub (or saved locally) via ``datasets``."""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import numpy as np
from torch.utils.data import Dataset

from gentool_data.common import MissingDataError, check_split, pil_transform

SPLIT_SEED = 0  # the fixed seed of the ``test_fraction`` hold-out
PROBE_TIMEOUT = 2.5  # seconds the hub probe may take, name lookup included


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
        loaded = load_hub(datasets, path, config, cache_dir)
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def hub_offline(datasets) -> bool:
    """Whether HF_DATASETS_OFFLINE or HF_HUB_OFFLINE ask for the cache only.

    ``datasets`` reads these once, on import; they are read again here (with its
    precedence: HF_DATASETS_OFFLINE, if set, over HF_HUB_OFFLINE) so that a value
    set later in the process counts too.
    """
    flag = os.environ.get("HF_DATASETS_OFFLINE")
    if flag is None:
        flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(datasets.config.HF_HUB_OFFLINE) or flag.upper() in datasets.config.ENV_VARS_TRUE_VALUES


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@lru_cache(maxsize=None)
def hub_reachable(endpoint: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to ``endpoint`` (or the proxy for it) opens within ``timeout`` s.

    Asked once per endpoint and process. Only the connection is tried, no
    request, so a proxy or TLS setup that ``datasets`` handles cannot fail it.
    """
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or "", proxy_url.port or 80
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)  # a thread bounds a slow name lookup too
    probe.start()
    probe.join(timeout)
    return bool(opened)


@contextmanager
def offline_mode(datasets) -> Iterator[None]:
    """``datasets`` and ``huggingface_hub`` in offline mode (the cache only) for a while."""
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def load_hub(datasets, path: str, config: str | None, cache_dir: str | None):
    """``load_dataset`` of a hub name, from the cache alone when offline or the hub is unreachable.

    Without this, ``datasets`` retries an unreachable hub for about 30 s before
    failing; here that takes at most ``PROBE_TIMEOUT`` seconds.
    """
    if hub_offline(datasets):
        why = "offline mode is on (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set)"
    else:
        endpoint = hub_endpoint()
        if hub_reachable(endpoint):
            return datasets.load_dataset(path, config, cache_dir=cache_dir)
        why = f"the Hugging Face hub ({endpoint}) is unreachable"
    try:
        with offline_mode(datasets):
            return datasets.load_dataset(path, config, cache_dir=cache_dir)
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        cache = cache_dir or datasets.config.HF_DATASETS_CACHE
        detail = "" if isinstance(err, ConnectionError) else f": {err}"  # e.g. only another config is cached
        raise MissingDataError(
            f"data set {path!r} is not a local folder, so it was taken as a hub name, but {why} "
            f"and it is not in the datasets cache ({cache}){detail}. Download it once where the hub "
            "is reachable and copy the cache here, then set HF_HUB_OFFLINE=1 (and the `cache_dir` "
            "option if the cache is elsewhere), or point `path` at a local copy: a folder written "
            "by Dataset.save_to_disk or a folder of images"
        ) from err


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
        from PIL import Image  # start-up: the plugins load for every command; Pillow only where an image is read

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
    A hub name is read from the ``datasets`` cache alone when HF_HUB_OFFLINE
    (or HF_DATASETS_OFFLINE) is set, or when the hub does not answer a quick
    connection probe; if it is not cached then, the error says so at once.
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
