"""Fashion-MNIST (Xiao et al. 2017), offline from Debian's package when present.

torchvision is imported only to read (or download) its copy under ``root``
(see :mod:`gentool_data.common`); :func:`fashion_mnist_shape` reads only the
IDX headers.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from gentool_data.common import MissingDataError, TensorImages, check_split, missing
from gentool_data.idx import find_idx, idx_names, idx_split_shape, load_torchvision, read_idx

#: Where ``apt-get install dataset-fashion-mnist`` puts the gzipped IDX files.
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
#: torchvision's ``FashionMNIST.classes``.
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def system_files(split: str, system_dir: str) -> list[Path] | None:
    """The split's (images, labels) IDX files in ``system_dir`` (gzipped or not), or None if absent."""
    if not system_dir:
        return None
    paths = [find_idx(Path(system_dir), name) for name in idx_names(split)]
    return None if None in paths else paths  # type: ignore[return-value]


def load_system(split: str, system_dir: Path) -> tuple[Tensor, Tensor] | None:
    """Images ``[N, 1, 28, 28]`` and labels from ``system_dir``, or None if absent."""
    paths = system_files(split, str(system_dir))
    if paths is None:
        return None
    images, labels = (read_idx(p) for p in paths)
    if len(images) != len(labels):
        raise ValueError(f"{system_dir}: {len(images)} images but {len(labels)} labels")
    return images.unsqueeze(1), labels


def _missing(split: str, raw: Path, system_dir: str) -> MissingDataError:
    hint = ", or run `apt-get install dataset-fashion-mnist`"
    return missing(f"Fashion-MNIST {split} split", [raw, system_dir or "(no system_dir)"], hint)


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
            raise _missing(split, raw, system_dir)
        hint = (f", or install Debian's dataset-fashion-mnist package (`apt-get install dataset-fashion-mnist`, "
                f"read from {DEBIAN_DIR}) or set `system_dir` to a folder of the gzipped IDX files")
        found = load_torchvision("FashionMNIST", split, root, download, label="Fashion-MNIST", hint=hint)
    return TensorImages(*found, CLASSES, image_size=image_size, mirror_invariant=True)


def fashion_mnist_shape(split: str, *, root: str, download: bool, system_dir: str,
                        image_size: int | None) -> tuple[int, ...] | None:
    """``(N, 1, H, W)`` of the split :func:`fashion_mnist` would load, from the same files' IDX headers.

    None when the files are to be downloaded first.
    """
    check_split(split)
    raw = Path(root) / "FashionMNIST" / "raw"
    paths = [raw / name for name in idx_names(split)]
    if not all(p.is_file() for p in paths):
        paths = system_files(split, system_dir)
    if paths is None:
        if download:
            return None
        raise _missing(split, raw, system_dir)
    return idx_split_shape(*paths, image_size)


fashion_mnist.shape = fashion_mnist_shape
