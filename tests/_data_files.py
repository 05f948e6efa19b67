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


# -- autoencoders whose options name files: a tiny one of each, for 1x8x8 images (4x4x4 latents) ------------

def kl_files(tmp: Path) -> dict:
    """A tiny ``kl`` autoencoder (factor 2, 4 latent channels) whose random weights are saved as trained ones."""
    import torch

    from gentool_autoencoders.files import FORMAT, WEIGHTS, save_tensors
    from gentool_autoencoders.kl import kl

    options = {"path": str(tmp / "kl"), "in_channels": 1, "latent_channels": 4, "channels": 8, "channel_mult": [1, 2]}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = kl(**options)
    save_tensors(Path(options["path"]) / WEIGHTS, model.state_dict(),
                 {"format": FORMAT, "config": model.config(), "step": "0"})
    return options


def tiny_vae(in_channels: int = 1):
    """A randomly initialised diffusers ``AutoencoderKL``: two levels (factor 2), 4 latent channels."""
    import torch

    diffusers = pytest.importorskip("diffusers", reason="diffusers_kl needs the optional extra: pip install gentool[diffusers]")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return diffusers.AutoencoderKL(in_channels=in_channels, out_channels=in_channels,
                                       down_block_types=("DownEncoderBlock2D",) * 2,
                                       up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                       layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=8).eval()


def diffusers_kl_files(tmp: Path) -> dict:
    """:func:`tiny_vae` saved with ``save_pretrained`` (config.json and safetensors weights)."""
    tiny_vae().save_pretrained(tmp / "vae")
    return {"path": str(tmp / "vae")}


#: autoencoder name -> writer ``(tmp) -> options`` of a tiny one for 1x8x8 images
AUTOENCODER_FILES = {
    "kl": kl_files,
    "diffusers_kl": diffusers_kl_files,
}
