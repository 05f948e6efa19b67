"""Failed downloads of the torchvision-backed sources are one-line user errors; summaries never download."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.error import URLError

import pytest
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.mnist as tv_mnist
from typer.testing import CliRunner

import gentool_data
from _tiny import recipe_text, unet_one_level
from gentool.api import summarize
from gentool.cli import app
from gentool.recipe import load_recipe
from gentool_data.common import MissingDataError

OFFLINE = "<urlopen error [Errno -2] Name or service not known>"


def offline_download(url, download_root, *args, **kwargs):
    """torchvision's download_and_extract_archive without a network: makes the folder, as the real one does."""
    os.makedirs(download_root, exist_ok=True)
    raise URLError("[Errno -2] Name or service not known")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline_download)
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline_download)


def test_cifar10_failed_download_says_what_where_why_and_how(tmp_path, offline):
    root = tmp_path / "data"
    with pytest.raises(MissingDataError) as err:
        gentool_data.cifar10("train", root=str(root), download=True)
    message = str(err.value)
    assert message.startswith("CIFAR-10 train split")
    assert str(root) in message and "download failed" in message
    assert f"URLError: {OFFLINE}" in message
    assert str(root / "cifar-10-batches-py") in message and "cifar-10-python.tar.gz" in message
    assert "\n" not in message
    assert isinstance(err.value.__cause__, URLError)
    assert not root.exists()  # the empty folder the failed download made is gone


@pytest.mark.parametrize("name, label, folder", [("mnist", "MNIST", "MNIST"),
                                                 ("fashion_mnist", "Fashion-MNIST", "FashionMNIST")])
def test_mnist_failed_download_quotes_torchvisions_error(tmp_path, offline, name, label, folder):
    # torchvision tries every mirror, then raises RuntimeError("Error downloading ...") over several lines
    root = tmp_path / "data"
    options = {"system_dir": ""} if name == "fashion_mnist" else {}
    with pytest.raises(MissingDataError) as err:
        getattr(gentool_data, name)("train", root=str(root), download=True, **options)
    message = str(err.value)
    assert message.startswith(f"{label} train split") and "download failed" in message
    assert "RuntimeError: Error downloading train-images-idx3-ubyte.gz" in message and OFFLINE in message
    assert str(root / folder / "raw") in message and "t10k-labels-idx1-ubyte" in message
    assert "\n" not in message
    assert isinstance(err.value.__cause__, RuntimeError)
    if name == "fashion_mnist":
        assert "dataset-fashion-mnist" in message and "system_dir" in message
    assert not root.exists()


def test_a_failed_download_leaves_an_existing_root_alone(tmp_path, offline):
    root = tmp_path / "data"
    (root / "other").mkdir(parents=True)
    with pytest.raises(MissingDataError):
        gentool_data.mnist("test", root=str(root), download=True)
    assert (root / "other").is_dir() and not (root / "MNIST").exists()


def test_a_damaged_download_is_a_missing_data_error(tmp_path, monkeypatch):
    def bad_md5(url, download_root, *args, **kwargs):
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", bad_md5)
    with pytest.raises(MissingDataError, match="RuntimeError: File not found or corrupted"):
        gentool_data.cifar10("test", root=str(tmp_path), download=True)




def write_cifar_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "c10.toml"
    path.write_text(recipe_text((tmp_path / "runs").as_posix(), name="c10", data_name="cifar10",
                                data='root = "data"\ndownload = true', timesteps=10,
                                denoiser_options=unet_one_level(in_channels=3, image_size=32),
                                train="steps = 1\nbatch_size = 2"), encoding="utf-8")
    return path


def test_cli_run_with_a_failed_download_is_a_one_line_error(tmp_path, offline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(write_cifar_recipe(tmp_path)), "--no-tasks", "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    flat = " ".join(result.output.split())
    assert "error: CIFAR-10 train split" in flat and "download failed" in flat and "URLError" in flat
    assert not (tmp_path / "data").exists()


def test_the_summary_neither_downloads_nor_creates_the_root(tmp_path, monkeypatch):
    calls = []

    def no_download(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the summary tried to download")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_download)
    monkeypatch.setattr("urllib.request.urlopen", no_download)
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(write_cifar_recipe(tmp_path))
    before = sorted(tmp_path.iterdir())
    summary = summarize(recipe)
    assert calls == []
    assert sorted(tmp_path.iterdir()) == before and not (tmp_path / "data").exists()
    assert summary["dataset (train)"] == "not downloaded yet: gentool run will download it into data"


def test_the_summary_still_reports_missing_data_without_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(write_cifar_recipe(tmp_path), overrides=["data.download=false"])
    summary = summarize(recipe)
    assert summary["dataset (train)"].startswith("not available yet: CIFAR-10 train split not found")
    assert "download = true" in summary["dataset (train)"]
