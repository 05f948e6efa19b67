"""Tiny files in the real formats of the data sources whose defaults read files (MNIST, CIFAR-10, ...).

Each writer ``(tmp, monkeypatch) -> options`` writes a few images under
``tmp`` and returns the [data] options that read them; shared by the
contract tests and the round-trip test.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    path.write_bytes(struct.pack(f">i{array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes())


def _idx_files(raw: Path) -> None:
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        _idx(raw / f"{prefix}-images-idx3-ubyte", np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.array([0, 5, 9]))


def mnist_files(tmp: Path, monkeypatch) -> dict:
    _idx_files(tmp / "MNIST" / "raw")
    return {"root": str(tmp)}


def fashion_mnist_files(tmp: Path, monkeypatch) -> dict:
    _idx_files(tmp / "FashionMNIST" / "raw")
    return {"root": str(tmp), "system_dir": ""}


def cifar10_files(tmp: Path, monkeypatch) -> dict:
    import torchvision.datasets
    from torchvision.datasets import CIFAR10

    class Unchecked(CIFAR10):  # torchvision checks md5 sums, which tiny files cannot match
        train_list = [[n, None] for n, _ in CIFAR10.train_list]
        test_list = [[n, None] for n, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Unchecked)  # gentool_data imports it when loading
    folder = tmp / CIFAR10.base_folder
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class {k}" for k in range(10)]}, f)
    for name in [n for n, _ in Unchecked.train_list + Unchecked.test_list]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": np.full((2, 3072), 200, np.uint8), "labels": [1, 2]}, f)
    return {"root": str(tmp)}


def _pngs(folder: Path) -> None:
    for k, cls in enumerate(["a", "b"]):
        (folder / cls).mkdir(parents=True)
        Image.new("RGB", (20, 12), (40 * k, 100, 250)).save(folder / cls / "0.png")


def image_folder_files(tmp: Path, monkeypatch) -> dict:
    _pngs(tmp / "images")
    return {"root": str(tmp / "images"), "image_size": 8}


def hf_dataset_files(tmp: Path, monkeypatch) -> dict:
    pytest.importorskip("datasets", reason="hf_dataset needs the optional extra: pip install gentool[hf]")
    _pngs(tmp / "images")  # read as an "imagefolder" by datasets
    return {"path": str(tmp / "images"), "image_size": 8, "test_fraction": 0.5, "label_column": "label"}


DATA_FILES = {
    "mnist": mnist_files,
    "fashion_mnist": fashion_mnist_files,
    "cifar10": cifar10_files,
    "image_folder": image_folder_files,
    "hf_dataset": hf_dataset_files,
}
