"""The built-in data sources, on tiny files written in each data set's real format."""

from __future__ import annotations

import gzip
import importlib
import inspect
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image
from torchvision.datasets import CIFAR10

import gentool_data
from _tiny import recipe_text, unet_one_level
from gentool.options import OptionError, check_options, option_docs
from gentool_data.common import MissingDataError
from gentool_data.fashion_mnist import DEBIAN_DIR

NAMES = ["fashion_mnist", "mnist", "cifar10", "image_folder", "hf_dataset", "toy"]


def registered() -> dict:
    found = {}
    gentool_data.gentool_register_data_sources(lambda name, factory: found.setdefault(name, factory))
    return found


# --- the contract ----------------------------------------------------------------


def test_registers_every_source():
    assert sorted(registered()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_options_are_keyword_only_and_documented(name):
    factory = registered()[name]
    params = list(inspect.signature(factory).parameters.values())
    assert params[0].name == "split" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    options = [p.name for p in params[1:]]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    assert sorted(option_docs(factory)) == sorted(options)


def test_required_options_are_reported():
    with pytest.raises(OptionError, match="root"):
        check_options(registered()["image_folder"], {})
    with pytest.raises(OptionError, match="path"):
        check_options(registered()["hf_dataset"], {})
    assert check_options(registered()["toy"], {})["kind"] == "blobs"


def check_items(ds, shape, n=None):
    if n is not None:
        assert len(ds) == n
    for i in range(min(len(ds), 4)):
        x, y = ds[i]
        assert x.dtype == torch.float32 and tuple(x.shape) == shape
        assert -1 <= x.min() and x.max() <= 1
        assert type(y) is int


# --- MNIST and Fashion-MNIST: IDX files ---------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049
    return struct.pack(f">i{array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes()


def fake_mnist(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixel (r, c) is ``(offset + 3 i + r + c) % 256``, with 0 and 255 present."""
    i, r, c = np.meshgrid(np.arange(n), np.arange(28), np.arange(28), indexing="ij")
    images = (offset + 3 * i + r + c) % 256
    images[:, 0, 0], images[:, 0, 1] = 0, 255
    return images.astype(np.uint8), (np.arange(n) + offset) % 10


def write_idx_split(folder: Path, prefix: str, n: int, offset: int = 0, gz: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = fake_mnist(n, offset)
    suffix = ".gz" if gz else ""
    write = gzip.open if gz else open
    with write(folder / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
        f.write(idx_bytes(images))
    with write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
        f.write(idx_bytes(labels))
    return images, labels


def write_idx(folder: Path, offset: int = 0, gz: bool = False) -> dict:
    return {
        "train": write_idx_split(folder, "train", 6, offset, gz),
        "test": write_idx_split(folder, "t10k", 4, offset + 100, gz),
    }


def check_pixels(ds, images, labels):
    check_items(ds, (1, 28, 28), len(labels))
    for i in (0, len(labels) - 1):
        x, y = ds[i]
        assert y == labels[i]
        assert x[0, 0, 0] == -1.0 and x[0, 0, 1] == 1.0
        expected = torch.from_numpy(images[i]).float() / 127.5 - 1
        torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_reads_torchvision_layout(tmp_path, split):
    files = write_idx(tmp_path / "MNIST" / "raw")
    ds = gentool_data.mnist(split, root=str(tmp_path))
    check_pixels(ds, *files[split])
    assert ds.classes[0].startswith("0")
    assert not ds.mirror_invariant  # a mirrored 2 is not a digit
    check_items(gentool_data.mnist(split, root=str(tmp_path), image_size=16), (1, 16, 16))


def test_fashion_mnist_reads_gzipped_system_dir(tmp_path):
    files = write_idx(tmp_path / "debian", gz=True)
    for split in ("train", "test"):
        ds = gentool_data.fashion_mnist(split, root=str(tmp_path / "none"), system_dir=str(tmp_path / "debian"))
        check_pixels(ds, *files[split])
        assert len(ds.classes) == 10 and ds.classes[0] == "T-shirt/top"
        assert ds.mirror_invariant  # a mirrored shirt is a shirt


def test_fashion_mnist_prefers_root_copy(tmp_path):
    write_idx(tmp_path / "debian", gz=True)
    files = write_idx(tmp_path / "FashionMNIST" / "raw", offset=7)
    ds = gentool_data.fashion_mnist("train", root=str(tmp_path), system_dir=str(tmp_path / "debian"))
    check_pixels(ds, *files["train"])


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_files_say_where_and_how(tmp_path, name):
    options = {"system_dir": str(tmp_path / "no_debian")} if name == "fashion_mnist" else {}
    with pytest.raises(FileNotFoundError) as err:
        registered()[name]("train", root=str(tmp_path / "empty"), **options)
    assert str(tmp_path / "empty") in str(err.value)
    assert "download = true" in str(err.value)
    if name == "fashion_mnist":
        assert "no_debian" in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)


def test_bad_idx_magic_is_refused(tmp_path):
    write_idx(tmp_path, gz=True)
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">ii", 2050, 6) + bytes(6))
    with pytest.raises(ValueError, match="magic"):
        gentool_data.fashion_mnist("train", root=str(tmp_path / "none"), system_dir=str(tmp_path))


@pytest.mark.skipif(not Path(DEBIAN_DIR).is_dir(), reason=f"{DEBIAN_DIR} absent (apt-get install dataset-fashion-mnist)")
def test_real_debian_fashion_mnist(tmp_path):
    train = gentool_data.fashion_mnist("train", root=str(tmp_path))
    test = gentool_data.fashion_mnist("test", root=str(tmp_path))
    assert (len(train), len(test)) == (60000, 10000)
    check_items(train, (1, 28, 28))
    assert len(train.classes) == 10
    assert sorted(set(train.labels.tolist())) == list(range(10))
    assert train.images.min() == 0 and train.images.max() == 255


# --- CIFAR-10: python pickle batches -------------------------------------------------


class UncheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 without md5 sums (md5 None: only existence is checked)."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


def write_cifar(folder: Path) -> dict:
    """Two images per batch; image ``i`` has red ``i``, green ``100 + i``, blue 255."""
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    written = {}
    for k, name in enumerate([f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]):
        idx = np.array([2 * k, 2 * k + 1])
        planes = [np.repeat(idx[:, None], 1024, 1), np.repeat(100 + idx[:, None], 1024, 1), np.full((2, 1024), 255)]
        data = np.concatenate(planes, axis=1).astype(np.uint8)  # rows: R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [int(i) % 10 for i in idx]}, f)
        written[name] = idx
    return written


def test_cifar10_reads_pickle_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", UncheckedCIFAR10)  # gentool_data imports it when loading
    write_cifar(tmp_path / "cifar-10-batches-py")
    train = gentool_data.cifar10("train", root=str(tmp_path))
    test = gentool_data.cifar10("test", root=str(tmp_path), image_size=16)
    check_items(train, (3, 32, 32), 10)
    check_items(test, (3, 16, 16), 2)
    x, y = train[3]
    assert y == 3 and train.classes[3] == "cat"
    assert train.mirror_invariant and test.mirror_invariant
    for channel, value in enumerate([3, 103, 255]):
        torch.testing.assert_close(x[channel], torch.full((32, 32), value / 127.5 - 1), rtol=0, atol=1e-6)
    assert test[0][1] == 10 % 10


def test_cifar10_refuses_files_with_wrong_md5(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    with pytest.raises(MissingDataError, match=r"incomplete or damaged \(torchvision: Dataset not found or corrupted"):
        gentool_data.cifar10("train", root=str(tmp_path))


# --- image folders -------------------------------------------------------------------


def write_png(path: Path, colour, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_image_folder_flat(tmp_path):
    write_png(tmp_path / "b.png", (255, 0, 0))
    write_png(tmp_path / "a.png", (0, 0, 0))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = gentool_data.image_folder("train", root=str(tmp_path), image_size=16)
    check_items(ds, (3, 16, 16), 2)
    assert ds[0][1] == -1 and torch.all(ds[0][0] == -1)  # a.png first: black
    torch.testing.assert_close(ds[1][0][:, 5, 5], torch.tensor([1.0, -1.0, -1.0]))
    grey = gentool_data.image_folder("test", root=str(tmp_path), image_size=8, channels=1, random_flip=True)
    check_items(grey, (1, 8, 8), 2)
    pickle.dumps(grey)  # DataLoader workers may need to pickle it


def test_image_folder_with_classes_and_splits(tmp_path):
    for split in ("train", "test"):
        write_png(tmp_path / split / "cat" / "1.png", (255, 255, 255))
        write_png(tmp_path / split / "dog" / "1.jpg", (0, 0, 0))
        write_png(tmp_path / split / "dog" / "2.png", (0, 0, 0))
    write_png(tmp_path / "test" / "dog" / "3.png", (0, 0, 0))
    train = gentool_data.image_folder("train", root=str(tmp_path), image_size=8, random_flip=True)
    test = gentool_data.image_folder("test", root=str(tmp_path), image_size=8)
    check_items(train, (3, 8, 8), 3)
    check_items(test, (3, 8, 8), 4)
    assert train.classes == ["cat", "dog"]
    assert [y for _, y in train] == [0, 1, 1]
    assert torch.all(train[0][0] == 1)


def test_image_folder_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        gentool_data.image_folder("train", root=str(tmp_path / "nowhere"))
    with pytest.raises(MissingDataError, match="no image files"):
        gentool_data.image_folder("train", root=str(tmp_path))


# --- toy ----------------------------------------------------------------------------


def stack(ds):
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def test_toy_is_deterministic_and_splits_differ():
    a, la = stack(gentool_data.toy("train", n=32))
    b, lb = stack(gentool_data.toy("train", n=32))
    c, _ = stack(gentool_data.toy("test", n=32))
    d, _ = stack(gentool_data.toy("train", n=32, seed=1))
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    assert a.shape == (32, 1, 8, 8) and -1 <= a.min() and a.max() <= 1


def test_toy_blobs_are_class_dependent():
    x, y = stack(gentool_data.toy("train", n=64, channels=3, image_size=8))
    assert set(y.tolist()) == {0, 1}
    left, right = x[..., :4].mean(dim=(1, 2, 3)), x[..., 4:].mean(dim=(1, 2, 3))
    assert torch.all((left > right) == (y == 0))
    x4, y4 = stack(gentool_data.toy("train", n=64, num_classes=4))
    assert set(y4.tolist()) == {0, 1, 2, 3}
    assert torch.equal(x4.mean(dim=(1, 2)).view(64, 4, 2).mean(-1).argmax(-1), y4)


def test_toy_two_points_are_exact():
    x, y = stack(gentool_data.toy("train", n=64, kind="two_points", channels=3))
    assert set(y.tolist()) == {0, 1}
    assert torch.all(x == (y.float() - 0.5)[:, None, None, None])
    with pytest.raises(ValueError, match="2 classes"):
        gentool_data.toy("train", kind="two_points", num_classes=3)


# --- Hugging Face datasets ---------------------------------------------------------


@pytest.fixture(scope="module")
def hf_saved(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path_factory.mktemp("hf") / "saved"
    images = [Image.new("RGB", (20, 12), (50 * i, 0, 0)) for i in range(5)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    data = datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(5)]}, features=features)
    data.save_to_disk(str(folder))
    return folder


def test_hf_dataset_from_save_to_disk(hf_saved):
    ds = gentool_data.hf_dataset("train", path=str(hf_saved), label_column="label", image_size=8)
    check_items(ds, (3, 8, 8), 5)
    assert ds.classes == ["a", "b"] and [y for _, y in ds] == [0, 1, 0, 1, 0]
    assert torch.allclose(ds[2][0][0], torch.tensor(100 / 127.5 - 1), atol=0.01)
    unlabelled = gentool_data.hf_dataset("train", path=str(hf_saved), image_size=4, channels=1)
    check_items(unlabelled, (1, 4, 4), 5)
    assert unlabelled[1][1] == -1


def test_hf_dataset_test_split(hf_saved):
    with pytest.raises(ValueError, match="test_fraction"):
        gentool_data.hf_dataset("test", path=str(hf_saved))
    train = gentool_data.hf_dataset("train", path=str(hf_saved), test_fraction=0.4, image_size=4)
    test = gentool_data.hf_dataset("test", path=str(hf_saved), test_fraction=0.4, image_size=4)
    assert (len(train), len(test)) == (3, 2)
    with pytest.raises(ValueError, match="column"):
        gentool_data.hf_dataset("train", path=str(hf_saved), label_column="labels")


def test_hf_dataset_from_local_imagefolder(tmp_path):
    pytest.importorskip("datasets")
    for i, name in enumerate(["cat", "cat", "dog"]):
        write_png(tmp_path / "images" / name / f"{i}.png", (0, 0, 255))
    ds = gentool_data.hf_dataset(
        "train", path=str(tmp_path / "images"), label_column="label", image_size=8, cache_dir=str(tmp_path / "cache")
    )
    check_items(ds, (3, 8, 8), 3)
    assert ds.classes == ["cat", "dog"] and sorted(y for _, y in ds) == [0, 0, 1]


# --- shape: a split's size and image shape without loading it (gentool check) -------------------


def test_idx_shape_reads_only_the_headers(tmp_path):
    write_idx(tmp_path / "debian", gz=True)
    write_idx(tmp_path / "MNIST" / "raw")
    for path in [*(tmp_path / "debian").glob("train-*"), *(tmp_path / "MNIST" / "raw").glob("train-*")]:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        header = data[:16] if "images" in path.name else data[:8]
        path.write_bytes(gzip.compress(header) if path.suffix == ".gz" else header)  # the images themselves are gone
    fashion = dict(root=str(tmp_path / "none"), download=False, system_dir=str(tmp_path / "debian"), image_size=None)
    assert gentool_data.fashion_mnist.shape("train", **fashion) == (6, 1, 28, 28)
    assert gentool_data.fashion_mnist.shape("train", **{**fashion, "image_size": 16}) == (6, 1, 16, 16)
    assert gentool_data.mnist.shape("train", root=str(tmp_path), download=False, image_size=None) == (6, 1, 28, 28)
    with pytest.raises((RuntimeError, ValueError)):  # loading does read the images: the files really are cut short
        gentool_data.fashion_mnist("train", root=str(tmp_path / "none"), system_dir=str(tmp_path / "debian"))


def test_shape_refuses_what_the_loader_refuses(tmp_path):
    files = write_idx(tmp_path / "debian", gz=True)
    fashion = dict(root=str(tmp_path / "none"), download=False, system_dir=str(tmp_path / "debian"), image_size=None)
    with pytest.raises(ValueError, match="image_size must be positive"):
        gentool_data.fashion_mnist.shape("train", **{**fashion, "image_size": 0})
    with pytest.raises(ValueError, match="image_size must be positive"):
        gentool_data.fashion_mnist("train", **{**fashion, "image_size": 0})
    with pytest.raises(MissingDataError, match="apt-get install dataset-fashion-mnist"):
        gentool_data.fashion_mnist.shape("train", **{**fashion, "system_dir": str(tmp_path / "none")})
    assert gentool_data.fashion_mnist.shape("train", **{**fashion, "system_dir": "", "download": True}) is None
    with gzip.open(tmp_path / "debian" / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(idx_bytes(files["train"][1][:5]))
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        gentool_data.fashion_mnist.shape("train", **fashion)
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        gentool_data.fashion_mnist("train", **fashion)


def test_cifar10_shape_counts_full_batches_without_unpickling(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            f.truncate(10_000 * 3072 + 100)  # a sparse file as large as a real batch (not a pickle: never read)
    options = dict(root=str(tmp_path), download=False, image_size=None, random_flip=False)
    assert gentool_data.cifar10.shape("train", **options) == (50_000, 3, 32, 32)
    assert gentool_data.cifar10.shape("test", **{**options, "image_size": 64}) == (10_000, 3, 64, 64)
    (folder / "data_batch_3").write_bytes(b"short")  # damaged: only the loader can say how
    assert gentool_data.cifar10.shape("train", **options) is None
    with pytest.raises(MissingDataError, match="download = true"):
        gentool_data.cifar10.shape("train", **{**options, "root": str(tmp_path / "none")})


def test_class_names_are_torchvisions():
    from torchvision.datasets import MNIST, FashionMNIST

    # the modules (the package's attributes of these names are the factories)
    cifar, fashion_mnist, mnist = (importlib.import_module(f"gentool_data.{m}") for m in ("cifar", "fashion_mnist", "mnist"))
    assert mnist.CLASSES == MNIST.classes and fashion_mnist.CLASSES == FashionMNIST.classes
    assert cifar.FOLDER == CIFAR10.base_folder
    assert [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] == cifar.BATCHES["train"] + cifar.BATCHES["test"]




def test_check_asks_shape_and_refuses_what_run_would(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gentool.cli import app

    write_idx(tmp_path / "debian", gz=True)  # 6 train images
    recipe = tmp_path / "fm.toml"
    recipe.write_text(recipe_text((tmp_path / "runs").as_posix(), name="fm", data_name="fashion_mnist",
                                  data=f'root = "{(tmp_path / "none").as_posix()}"\n'
                                       f'system_dir = "{(tmp_path / "debian").as_posix()}"',
                                  timesteps=10, denoiser_options=unet_one_level(), train="steps = 1\nbatch_size = 4"),
                      encoding="utf-8")
    fm = importlib.import_module("gentool_data.fashion_mnist")
    monkeypatch.setattr(fm, "read_idx", lambda path: pytest.fail(f"gentool check loaded {path}"))

    def check(*sets: str):
        args = ["check", str(recipe)] + [a for s in sets for a in ("--set", s)]
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        return result.exit_code, " ".join(result.output.split())

    code, text = check()
    assert code == 0 and "dataset (train) │ 6 images" in text, text
    code, text = check("train.batch_size=8")
    assert code == 2 and "train.batch_size: 8 is more than the 6 images of the train split" in text, text
    code, text = check("data.image_size=16")
    assert code == 2 and "the data set's images are 1x16x16" in text, text
    code, text = check("data.image_size=0")
    assert code == 2 and "data (fashion_mnist): image_size must be positive, got 0" in text, text
    assert "Traceback" not in text


def test_importing_one_source_module_leaves_the_other_sources_lazy_names_bound_to_functions():
    import subprocess
    import sys

    code = ("import gentool_data.fashion_mnist, gentool_data; "
            "import types; assert not isinstance(gentool_data.mnist, types.ModuleType), gentool_data.mnist; "
            "assert callable(gentool_data.mnist)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
