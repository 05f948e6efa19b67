"""Class accuracy, several guidance weights and the real-data floor in ``gentool eval`` (toy 28x28 data, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

import gentool
from gentool.config import EvalConfig
from gentool.evaluation import evaluate
from gentool.evaluation.classes import ClassifierError, class_accuracy
from gentool.evaluation.evaluate import parse_guidance, scores
from gentool.evaluation.features import build_extractor
from _tiny import UNET28

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = """
[run]
name = "cond28"
output_dir = "{out}"
[data]
name = "toy"
n = 40
image_size = 28
channels = 1
num_classes = 4
[schedule]
name = "linear"
timesteps = 20
[denoiser]
name = "unet"
""" + UNET28 + """
class_cond = {cond}
{conditioner}
[sampler]
name = "ddim"
steps = 2
[train]
steps = 0
"""
CONDITIONER = '[conditioner]\nname = "class_embedding"\nnum_classes = 4'


def build(tmp_path, cond=True):
    text = RECIPE.format(out=tmp_path.as_posix(), cond=str(cond).lower(), conditioner=CONDITIONER if cond else "")
    (tmp_path / "r.toml").write_text(text, encoding="utf-8")
    return gentool.build(gentool.load_recipe(tmp_path / "r.toml"), device="cpu")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """gentool-cnn28 trained on the toy train split, saved where evaluation looks by default for 'toy'."""
    from gentool_data.toy import toy
    from gentool_metrics import train_classifier

    cache = tmp_path_factory.mktemp("cache")
    options = dict(n=40, image_size=28, channels=1, num_classes=4)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("GENTOOL_CACHE_DIR", str(cache))
        from gentool_metrics import default_weights_path

        result = train_classifier(toy("train", **options), default_weights_path("toy"), test=toy("test", **options),
                                  num_classes=4, steps=15, batch_size=16, lr=3e-3, data="toy")
    return cache, result


def test_class_accuracy_is_the_fraction_of_argmax_hits():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [5.0, 0.0, 9.0], [1.0, 0.0, 0.0]])
    assert class_accuracy(logits, torch.tensor([0, 1, 0, 2])) == 0.5  # rows 0 and 1 are right


def test_fid_of_a_set_against_itself_is_about_zero(tmp_path):
    run = build(tmp_path)
    fx = build_extractor(run.registry, "gentool-cnn28")
    feats = {"pool": torch.randn(300, 128, generator=torch.Generator().manual_seed(0)), "logits": torch.randn(300, 10)}
    assert abs(scores(["fid"], fx, feats, feats, None)["fid"]) < 1e-6
    shifted = {k: v + 0.5 for k, v in feats.items()}
    assert scores(["fid"], fx, shifted, feats, None)["fid"] == pytest.approx(0.25 * 128, rel=1e-4)  # |mu1 - mu2|^2


def test_floor_class_accuracy_of_all_real_test_images_equals_the_classifiers_test_accuracy(classifier, tmp_path,
                                                                                             monkeypatch):
    cache, result = classifier
    monkeypatch.setenv("GENTOOL_CACHE_DIR", str(cache))
    run = build(tmp_path)
    config = EvalConfig(metrics=["fid", "isc", "class_acc"], n=40, batch_size=40, feature_extractor="gentool-cnn28",
                        split="test")
    report = evaluate(run, config, guidance=[0.0, 2.0], floor=True, cache_dir=tmp_path / "ref", progress=False)
    assert report["floor"]["class_acc"] == pytest.approx(result["test_accuracy"], abs=1e-12)
    assert report["feature_extractor"]["weights"].endswith("gentool-cnn28-toy.safetensors")
    assert set(report["by_guidance"]) == {"0", "2"}
    for entry in report["by_guidance"].values():
        assert 0 <= entry["class_acc"] <= 1 and math.isfinite(entry["fid"]) and entry["isc"] >= 1 - 1e-6
    assert {"sampling_w0", "sampling_w2", "floor"} <= set(report["time_s"])


def test_class_acc_refuses_an_untrained_classifier_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTOOL_CACHE_DIR", str(tmp_path / "empty"))
    run = build(tmp_path)
    config = EvalConfig(metrics=["class_acc"], n=10, feature_extractor="gentool-cnn28")
    with pytest.raises(ClassifierError, match="gentool features train toy"):
        evaluate(run, config, progress=False)


def test_class_acc_needs_a_class_conditional_run(tmp_path, classifier, monkeypatch):
    monkeypatch.setenv("GENTOOL_CACHE_DIR", str(classifier[0]))
    run = build(tmp_path, cond=False)
    with pytest.raises(ClassifierError, match="class-conditional"):
        evaluate(run, EvalConfig(metrics=["class_acc"], n=10, feature_extractor="gentool-cnn28"), progress=False)


def test_guidance_lists_parse_and_bad_ones_say_what_is_wanted():
    assert parse_guidance("2") == 2.0 and parse_guidance("0,1,2") == [0.0, 1.0, 2.0] and parse_guidance(None) is None
    with pytest.raises(ValueError, match="comma-separated"):
        parse_guidance("0,x")
