"""``gentool features train``: gentool-cnn28 trained as a classifier, saved as safetensors, found by default."""

from __future__ import annotations

import importlib

import pytest
import torch

from gentool_metrics import cnn28, default_weights_path, train_classifier
from gentool_metrics.cnn28 import load_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def toy_split(split: str, n: int):
    from gentool_data.toy import toy

    return toy(split, n=n, image_size=28, channels=1, num_classes=4, seed=0)


def uint8_of(data):
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([int(data[i][1]) for i in range(len(data))])
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1), y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnn28") / "w.safetensors"
    result = train_classifier(toy_split("train", 128), path, test=toy_split("test", 48), num_classes=4, steps=20,
                              batch_size=16, lr=3e-3, data="toy")
    return path, result


def test_reported_test_accuracy_is_what_the_saved_classifier_gives_on_the_same_images(trained):
    path, result = trained
    fx = cnn28(weights_path=str(path))
    assert fx.trained and fx.num_classes == 4 and path.suffix == ".safetensors"
    images, labels = uint8_of(toy_split("test", 48))
    logits = fx(images)[1]
    independent = (logits.argmax(1) == labels).float().mean().item()  # torch-fidelity's call, argmax by hand
    assert result["test_accuracy"] == pytest.approx(independent, abs=1e-12)
    assert independent > 0.5  # chance is 0.25: the plumbing trains something
    _, meta = load_weights(path)
    assert float(meta["test_accuracy"]) == pytest.approx(independent, abs=1e-6) and meta["data"] == "toy"


def test_the_default_file_is_found_for_the_data_set_and_a_missing_one_names_the_command(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("GENTOOL_CACHE_DIR", str(tmp_path))
    missing = cnn28(data="toy")
    assert not missing.trained and "gentool features train toy" in missing.untrained_hint
    target = default_weights_path("toy")
    assert target == tmp_path / "features" / "gentool-cnn28-toy.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(trained[0].read_bytes())
    found = cnn28(data="toy")
    assert found.trained and found.weights_path == str(target)
    x = uint8_of(toy_split("test", 8))[0]
    assert torch.equal(found(x)[1], cnn28(weights_path=str(trained[0]))(x)[1])


def test_a_pickle_or_foreign_file_is_refused_with_the_command_to_make_one(tmp_path):
    bad = tmp_path / "gentool-cnn28-mnist.safetensors"
    torch.save({"a": torch.zeros(1)}, bad)  # a pickle, never unpickled
    with pytest.raises(ValueError, match="gentool features train mnist"):
        cnn28(weights_path=str(bad))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="wrong keys"):
        cnn28(weights_path=str(tmp_path / "other.safetensors"))


def test_the_command_rejects_an_unknown_action_and_data_source():
    from gentool.errors import GentoolError
    from gentool_metrics.features_cmd import features, train_features

    with pytest.raises(GentoolError, match="valid: train"):
        features("fit", "fashion_mnist")
    with pytest.raises(GentoolError, match="unknown data source 'fashoin'"):
        train_features("fashoin")


class _LeftOrRight(torch.utils.data.Dataset):
    """Class 0: a bright bar near the left edge; class 1: the same bar near the right edge (mirror images)."""

    def __init__(self, n: int):
        self.labels = torch.arange(n) % 2
        self.images = torch.full((n, 1, 28, 28), -1.0)
        self.images[self.labels == 0, :, 6:22, 3:8] = 1.0
        self.images[self.labels == 1, :, 6:22, 20:25] = 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


@pytest.mark.parametrize("flip", [False, True])
def test_flip_augmentation_mirrors_the_training_images(flip, tmp_path):
    # Two classes that are each other's mirror image: learnable without flips, not
    # with them (every training image shows up with both labels equally often).
    data = _LeftOrRight(64)
    result = train_classifier(data, tmp_path / "w.safetensors", test=data, num_classes=2, steps=30, batch_size=32,
                              lr=3e-3, flip=flip)
    if flip:
        assert result["test_accuracy"] <= 0.75
    else:
        assert result["test_accuracy"] == 1.0
    assert load_weights(tmp_path / "w.safetensors")[1]["flip"] == str(flip)


def test_the_command_flips_only_data_whose_mirror_images_keep_their_class(monkeypatch, tmp_path):
    import gentool
    from gentool.registry import Registry
    from gentool_data.toy import toy
    from gentool_metrics import features_cmd

    def garments(split, **options):
        data = toy(split, **options)
        data.mirror_invariant = True  # as fashion_mnist and cifar10 declare
        return data

    registry = Registry()
    registry.add("data_source", "stripes", toy, "test")  # class k: the k-th stripe from the left
    registry.add("data_source", "garments", garments, "test")
    monkeypatch.setattr(gentool, "registry", lambda: registry)
    calls = []
    cnn28_module = importlib.import_module("gentool_metrics.cnn28")  # gentool_metrics.cnn28 is the factory
    monkeypatch.setattr(cnn28_module, "train_classifier", lambda *a, **kw: calls.append(kw["flip"]) or {})
    for data, flip in [("stripes", None), ("garments", None), ("garments", False), ("stripes", True)]:
        features_cmd.train_features(data, flip=flip, out=tmp_path / "w.safetensors")
    assert calls == [False, True, False, True]


@pytest.mark.parametrize("option", [["--steps", "0"], ["--steps", "-5"], ["--batch-size", "0"]])
def test_a_classifier_that_trains_no_step_is_refused(option, tmp_path):
    """--steps 0 (or less, or --batch-size 0) saved the random initial weights, which eval then used as trained."""
    from typer.testing import CliRunner

    from gentool.cli import app

    out = tmp_path / "w.safetensors"
    result = CliRunner().invoke(app, ["features", "train", "toy", *option, "-o", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"error: {option[0]} {option[1]}: must be at least 1" in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_a_weights_file_trained_for_no_step_is_not_used_as_trained(tmp_path):
    """A file that an earlier gentool saved after 0 steps: refused, never taken for a trained classifier."""
    fx = cnn28()  # seeded random weights, as a 0-step training saved them
    path = cnn28_module().save_weights(fx, tmp_path / "gentool-cnn28-toy.safetensors", {"data": "toy", "steps": "0"})
    with pytest.raises(ValueError, match="trained for 0 steps, so its weights are untrained"):
        cnn28(weights_path=str(path))


def cnn28_module():
    return importlib.import_module("gentool_metrics.cnn28")
