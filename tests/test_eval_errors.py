"""Evaluation errors that are the user's to fix: failed weights downloads and too small an ``--n``."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
import torch_fidelity.feature_extractor_vgg16 as tf_vgg16

import gentool
from gentool.config import EvalConfig
from gentool.evaluation import FeatureWeightsUnavailable, build_extractor, evaluate
from gentool.recipe import load_recipe

OFFLINE = "<urlopen error [Errno -2] Name or service not known>"


def offline(*args, **kwargs):
    raise URLError("[Errno -2] Name or service not known")


def no_sampling(*args, **kwargs):
    raise AssertionError("sampling started before the feature extractor was built")


@pytest.fixture
def run(tmp_path):
    data = {
        "run": {"name": "ev", "output_dir": str(tmp_path / "runs")},
        "data": {"name": "toy", "n": 20, "image_size": 8, "channels": 1},
        "schedule": {"name": "linear", "timesteps": 10},
        "denoiser": {"name": "unet", "in_channels": 1, "image_size": 8, "channels": 32, "channel_mult": [1],
                     "num_res_blocks": 1, "attention_resolutions": [], "dropout": 0.0, "class_cond": False},
        "train": {"steps": 0},
    }
    return gentool.build(load_recipe(data=data), device="cpu")


def test_an_offline_torch_fidelity_extractor_is_a_user_error(run, monkeypatch):
    monkeypatch.setattr(tf_vgg16, "torchvision_load_pretrained_vgg16", offline)
    with pytest.raises(FeatureWeightsUnavailable) as err:
        build_extractor(run.registry, "vgg16", metrics=["fid"])
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)  # the CLI shows it as one line, exit 2
    assert "'vgg16'" in message and f"URLError: {OFFLINE}" in message
    assert "--feature-weights PATH" in message and "[eval] feature_weights" in message
    assert isinstance(err.value.__cause__, URLError)


def test_the_inception_plugins_own_message_is_kept(run, monkeypatch):
    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", offline)
    with pytest.raises(FeatureWeightsUnavailable) as err:
        build_extractor(run.registry, "inception-v3-compat")
    message = str(err.value)
    assert message.startswith("could not get the Inception weights") and OFFLINE in message
    assert "--feature-weights PATH" in message


def test_evaluate_fails_on_the_download_before_sampling(run, monkeypatch):
    monkeypatch.setattr(tf_vgg16, "torchvision_load_pretrained_vgg16", offline)
    monkeypatch.setattr(run, "sample", no_sampling)
    with pytest.raises(FileNotFoundError, match="--feature-weights"):
        evaluate(run, EvalConfig(metrics=["fid"], n=10, feature_extractor="vgg16"), progress=False)


def test_other_extractor_errors_are_not_taken_for_a_failed_download(run, monkeypatch):
    def bug(*args, **kwargs):
        raise TypeError("a bug in the extractor")

    monkeypatch.setattr(tf_vgg16, "torchvision_load_pretrained_vgg16", bug)
    with pytest.raises(TypeError, match="a bug"):
        build_extractor(run.registry, "vgg16", metrics=["fid"])


def test_too_small_an_n_names_the_flag(run, monkeypatch):
    monkeypatch.setattr(run, "sample", no_sampling)
    with pytest.raises(ValueError, match=r"n \(--n, or \[eval\] n\) must be at least 10 for fid, got 8"):
        evaluate(run, EvalConfig(metrics=["fid"], n=8, feature_extractor="gentool-cnn28"), progress=False)
