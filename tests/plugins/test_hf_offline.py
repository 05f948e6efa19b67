"""The hf_dataset source without internet: offline mode, an unreachable hub, local copies."""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import time
from pathlib import Path

import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

import gentool_data  # noqa: E402
from gentool_data.common import MissingDataError  # noqa: E402

hf = importlib.import_module("gentool_data.hf_dataset")  # the package's `hf_dataset` is the factory
UNCACHED = "gentool-tests/no-such-dataset"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture(autouse=True)
def online_by_default(monkeypatch):
    """No offline flag, no proxy and no remembered probe, whatever the caller's environment."""
    from huggingface_hub import constants

    for var in OFFLINE_VARS + ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    probe = hf.hub_reachable
    probe.cache_clear()
    yield
    probe.cache_clear()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_probe(endpoint, timeout=hf.PROBE_TIMEOUT):
    raise AssertionError("the hub was probed in offline mode")


def check_message(message: str, name: str, why: str) -> None:
    for part in (repr(name), why, "HF_HUB_OFFLINE=1", "cache_dir", "save_to_disk", "folder of images"):
        assert part in message, (part, message)


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_env_fails_fast_for_an_uncached_name(monkeypatch, tmp_path, var):
    monkeypatch.setenv(var, "1")
    monkeypatch.setattr(hf, "hub_reachable", no_probe)
    start = time.perf_counter()
    with pytest.raises(MissingDataError) as info:
        gentool_data.hf_dataset("train", path=UNCACHED, cache_dir=str(tmp_path / "cache"))
    assert time.perf_counter() - start < 10
    check_message(str(info.value), UNCACHED, "offline mode is on")
    assert datasets.config.HF_HUB_OFFLINE is False  # offline only while loading


def test_offline_flags_follow_datasets_precedence(monkeypatch):
    assert not hf.hub_offline(datasets)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf.hub_offline(datasets)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # set, it wins over HF_HUB_OFFLINE
    assert not hf.hub_offline(datasets)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read by datasets on import
    assert hf.hub_offline(datasets)


def test_probe_is_quick_and_true_only_for_a_listening_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hf.hub_reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    start = time.perf_counter()
    assert not hf.hub_reachable(f"http://127.0.0.1:{closed_port()}")
    assert not hf.hub_reachable("https://gentool-tests.invalid", timeout=1.0)
    assert time.perf_counter() - start < 5


def test_unreachable_hub_fails_fast_for_an_uncached_name(monkeypatch, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(hf, "hub_endpoint", lambda: endpoint)
    start = time.perf_counter()
    with pytest.raises(MissingDataError) as info:
        gentool_data.hf_dataset("train", path=UNCACHED, cache_dir=str(tmp_path / "cache"))
    assert time.perf_counter() - start < 10
    check_message(str(info.value), UNCACHED, f"hub ({endpoint}) is unreachable")
    assert datasets.config.HF_HUB_OFFLINE is False


def write_images(folder: Path, n: int = 3) -> Path:
    for i in range(n):
        (folder / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 6), (40 * i, 0, 0)).save(folder / "a" / f"{i}.png")
    return folder


def test_unreachable_hub_reads_a_cached_name(monkeypatch, tmp_path):
    """A hub name in the datasets cache loads from it (the cache is laid out as datasets lays it out)."""
    monkeypatch.setattr(hf, "hub_endpoint", lambda: f"http://127.0.0.1:{closed_port()}")
    built = tmp_path / "built"
    datasets.load_dataset("imagefolder", data_dir=str(write_images(tmp_path / "images")), cache_dir=str(built))
    arrow = next(built.glob("imagefolder/*/*/*/imagefolder-train.arrow"))
    cached = tmp_path / "cache" / "gentool-tests___tiny" / "default" / "0.0.0" / "0123abcd"
    shutil.copytree(arrow.parent, cached)
    (cached / arrow.name).rename(cached / "tiny-train.arrow")
    assert json.loads((cached / "dataset_info.json").read_text())["config_name"] == "default"
    start = time.perf_counter()
    ds = gentool_data.hf_dataset("train", path="gentool-tests/tiny", image_size=4, cache_dir=str(tmp_path / "cache"))
    assert time.perf_counter() - start < 10
    assert len(ds) == 3 and tuple(ds[0][0].shape) == (3, 4, 4)


def test_local_copies_load_in_offline_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "hub_reachable", no_probe)
    saved = tmp_path / "saved"
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    images = [Image.new("RGB", (8, 8), (50 * i, 0, 0)) for i in range(4)]
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features).save_to_disk(str(saved))
    ds = gentool_data.hf_dataset("train", path=str(saved), label_column="label", image_size=4)
    assert len(ds) == 4 and ds.classes == ["a", "b"] and [y for _, y in ds] == [0, 1, 0, 1]
    folder = gentool_data.hf_dataset("train", path=str(write_images(tmp_path / "images")), image_size=4,
                                     cache_dir=str(tmp_path / "cache"))
    assert len(folder) == 3
