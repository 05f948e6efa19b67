"""``gentool eval`` end to end on a small trained 28x28 grey model, on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gentool.cli import app
from _tiny import UNET28

runner = CliRunner()

# Fashion-MNIST-shaped toy data (28x28, grey, 4 classes) and a very small U-Net.
RECIPE = """
[run]
name = "grey28"
output_dir = "{out}"

[data]
name = "toy"
n = 20
image_size = 28
channels = 1
num_classes = 4

[schedule]
name = "linear"
timesteps = 20

[denoiser]
name = "unet"
""" + UNET28 + """
class_cond = false

[train]
steps = 2
batch_size = 4
checkpoint_every = 2
test_loss_timesteps = [5, 15]

[eval]
feature_extractor = "gentool-cnn28"
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The run directory of a model trained for 2 steps."""
    from gentool.api import run_recipe

    tmp = tmp_path_factory.mktemp("eval")
    recipe = tmp / "grey28.toml"
    recipe.write_text(RECIPE.format(out=(tmp / "runs").as_posix()), encoding="utf-8")
    result = run_recipe(recipe, device="cpu", run_tasks=False, progress=False, log=lambda m: None)
    assert result.run.step == 2
    return result.run.run_dir


def test_eval_writes_its_report(trained, tmp_path):
    out, samples = tmp_path / "report.json", tmp_path / "samples"
    result = invoke("eval", trained, "--n", 10, "--metrics", "fid,isc,kid,prc,loss_t,bpd", "--steps", 2,
                    "--batch-size", 10, "--bpd-timesteps", 2, "--data-batches", 1, "--cache-dir", tmp_path / "cache",
                    "--out", out, "--save-samples", samples)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert json.loads(result.stdout) == report  # printed and saved
    keys = {"fid", "isc", "isc_std", "kid", "kid_std", "precision", "recall", "f_score", "loss_t/5", "loss_t/15",
            "bpd", "bpd_prior", "bpd_decoder", "bpd_vb"}
    assert set(report["metrics"]) == keys and all(math.isfinite(v) for v in report["metrics"].values())
    assert report["n"] == 10 and report["step"] == 2 and report["checkpoint"].endswith("step_00000002.pt")
    assert report["sampler"] == {"name": "ancestral", "steps": 2, "guidance": 0.0,
                                 "options": {"variance": "beta", "clip_denoised": True, "spacing": "uniform"}}
    assert report["feature_extractor"]["name"] == "gentool-cnn28" and report["reference"]["n"] == 20
    assert report["bpd"] == {"images": 10, "timesteps": 2}
    assert report["time_s"]["total"] > 0 and report["time_s"]["sampling"] > 0
    assert len(list(samples.glob("*.png"))) == 10


def test_eval_defaults_to_a_report_in_the_run_directory(trained, tmp_path):
    result = invoke("eval", trained, "--n", 10, "--metrics", "fid", "--steps", 1, "--batch-size", 10,
                    "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    report = json.loads((trained / "eval" / "step_00000002.json").read_text())
    assert set(report["metrics"]) == {"fid"} and report["reference"]["cached"] is False
    # gentool-cnn28 without trained weights: said in the report and, loudly, on stderr
    assert report["feature_extractor"]["random_weights"] is True
    assert any(line.startswith("warning:") and "compare only with" in line for line in result.stderr.splitlines())


def test_a_broken_weights_file_is_a_clear_error(trained, tmp_path):
    broken = tmp_path / "inception.pth"
    broken.write_bytes(b"garbage")
    result = invoke("eval", trained, "--n", 10, "--metrics", "fid", "--feature-extractor", "inception-v3-compat",
                    "--feature-weights", broken)
    assert result.exit_code == 2
    assert str(broken) in result.output and "Traceback" not in result.output
    missing = tmp_path / "nowhere.pth"
    result = invoke("eval", trained, "--n", 10, "--feature-weights", missing)
    assert result.exit_code == 2 and str(missing) in result.output


def test_an_unknown_metric_is_a_clear_error(trained):
    result = invoke("eval", trained, "--metrics", "fid,bdp")
    assert result.exit_code == 2 and "'bpd'" in result.output


def test_the_metrics_help_names_every_metric_the_code_accepts():
    """Issue 24, defect 5: the help listed fid,isc,kid,prc,loss_t,bpd but not class_acc, which docs/quality.md uses."""
    import typing

    import typer.main

    from gentool.config import EvalMetric
    from gentool.evaluation.evaluate import parse_metrics

    option = next(p for p in typer.main.get_command(app).commands["eval"].params if p.name == "metrics")
    listed = option.help.split("Comma-separated: ", 1)[1].split(" ", 1)[0].split(",")
    accepted = list(typing.get_args(EvalMetric))  # what [eval] metrics accepts
    assert listed == accepted and parse_metrics(",".join(listed)) == accepted, option.help
    assert "class_acc" in listed


def test_a_failed_weights_download_is_a_clear_error(trained, monkeypatch):
    from urllib.error import URLError

    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
    import torch_fidelity.feature_extractor_vgg16 as tf_vgg16

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", offline)
    monkeypatch.setattr(tf_vgg16, "torchvision_load_pretrained_vgg16", offline)
    for extractor in ("inception-v3-compat", "vgg16"):
        result = invoke("eval", trained, "--n", 10, "--steps", 1, "--metrics", "fid", "--feature-extractor", extractor)
        assert result.exit_code == 2, result.output
        flat = " ".join(result.output.split())
        assert "Traceback" not in result.output and flat.startswith("error: could not get the")
        assert "Name or service not known" in flat and "--feature-weights PATH" in flat


def test_too_small_an_n_names_the_flag(trained):
    result = invoke("eval", trained, "--n", 8, "--metrics", "fid")
    assert result.exit_code == 2
    assert "error: n (--n, or [eval] n) must be at least 10 for fid, got 8" in " ".join(result.output.split())
