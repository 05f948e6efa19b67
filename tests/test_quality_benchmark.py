"""benchmarks/quality.py end to end in a tiny configuration: both systems train, sample, and are scored."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
from _tiny import UNET28

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = """
[run]
name = "q"
[data]
name = "toy"
n = 24
image_size = 28
channels = 1
num_classes = 4
[schedule]
name = "linear"
timesteps = 1000
[denoiser]
name = "unet"
""" + UNET28 + """
class_cond = true
[conditioner]
name = "class_embedding"
num_classes = 4
p_uncond = 0.2
[train]
steps = 1
batch_size = 4
"""


def load_benchmark():
    spec = importlib.util.spec_from_file_location("quality_benchmark", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_quality_benchmark_runs_end_to_end_and_scores_both_systems(tmp_path, monkeypatch, capsys):
    from gentool_data.toy import toy
    from gentool_metrics import train_classifier

    monkeypatch.setenv("GENTOOL_CACHE_DIR", str(tmp_path / "cache"))
    options = dict(n=24, image_size=28, channels=1, num_classes=4)
    clf = train_classifier(toy("train", **options), tmp_path / "c.safetensors", test=toy("test", **options),
                           num_classes=4, steps=5, batch_size=8, data="toy")
    (tmp_path / "r.toml").write_text(RECIPE, encoding="utf-8")
    bench = load_benchmark()
    results = bench.main(["--quick", "--recipe", str(tmp_path / "r.toml"), "--classifier", clf["path"],
                          "--steps", "1", "--batch", "4", "--diffusers-channels", "32", "--n-per-class", "3",
                          "--sampling-steps", "2", "--batch-size", "12", "--out", str(tmp_path / "r.json")])
    assert set(results["systems"]) == {"diffusers", "gentool"}
    for system in results["systems"].values():
        assert set(system["by_guidance"]) == {"0", "2"} and system["train_s"] > 0
        for entry in system["by_guidance"].values():
            assert math.isfinite(entry["fid"]) and 0 <= entry["class_acc"] <= 1
    assert results["systems"]["gentool"]["steps"] == 1 and results["systems"]["diffusers"]["steps"] == 1
    # the same parameter count: diffusers' UNet2DModel and gentool's U-Net of the same widths
    assert results["systems"]["diffusers"]["params"] == results["systems"]["gentool"]["params"]
    # the floor scores the 12 first of a seeded permutation of real test images with their true labels
    assert 0 <= results["floor"]["class_acc"] <= 1 and results["classifier"]["test_accuracy"] == pytest.approx(
        clf["test_accuracy"], abs=1e-6)
    table = capsys.readouterr().out
    assert "| diffusers |" in table and "| gentool |" in table and "real test images" in table
    assert (tmp_path / "r.json").is_file()
