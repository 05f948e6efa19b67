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


def test_merge_prints_one_table_of_side_by_side_runs_and_refuses_different_set_ups(tmp_path, capsys):
    import json

    bench = load_benchmark()
    entry = {"fid": 30.0, "isc": 2.0, "class_acc": 0.2, "sample_s": 1.0}
    common = {"device": "cpu", "threads": 1, "n": 20, "ref_n": 0, "sampling_steps": 5, "guidance": [0.0],
              "classifier": {"path": "x", "test_accuracy": 0.9}, "floor": {"fid": 0.1, "isc": 7.0, "class_acc": 0.9}}
    system = {"params": 10, "steps": 4, "batch": 2, "by_guidance": {"0": entry}}
    a = tmp_path / "d.json"
    b = tmp_path / "g.json"
    a.write_text(json.dumps({**common, "systems": {"diffusers": {**system, "train_s": 100.0}}}))
    b.write_text(json.dumps({**common, "systems": {"gentool": {**system, "train_s": 96.0,
                                                                "by_guidance": {"0": {**entry, "fid": 3.0}}}}}))
    results = bench.main(["--merge", str(a), str(b)])
    assert set(results["systems"]) == {"diffusers", "gentool"}
    out = capsys.readouterr().out
    assert "| diffusers |" in out and "| gentool |" in out and "train time 0.96x, best FID 0.10x" in out
    b.write_text(json.dumps({**common, "n": 40, "systems": {"gentool": {**system, "train_s": 1.0}}}))
    with pytest.raises(SystemExit, match="merge only runs of one set-up"):
        bench.main(["--merge", str(a), str(b)])
