"""gentool export: EMA weights as safetensors with the recipe in the metadata, loadable for sampling."""

from __future__ import annotations

import tomllib

import pytest
import torch
from _engine_util import checkpoint
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

import gentool
from gentool.cli import app
from gentool.engine.export import export_weights

pytestmark = pytest.mark.usefixtures("one_thread")


# trained_toy (conftest): the toy recipe, class-conditional, trained 2 steps with one checkpoint, at step 2


def test_export_writes_the_ema_weights_and_the_recipe(trained_toy, tmp_path):
    out = tmp_path / "model.safetensors"
    result = CliRunner().invoke(app, ["export", str(trained_toy.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    state = checkpoint(trained_toy.run_dir, 2)
    weights = load_file(str(out))
    assert weights.keys() == state["ema"].keys()
    for key, value in state["ema"].items():
        assert torch.equal(weights[key], value), key
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["ema"])  # EMA, not online
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["step"] == "2" and meta["weights"] == "ema"
    recipe = tomllib.loads(meta["recipe"])
    assert recipe["denoiser"]["channels"] == 32 and recipe["conditioner"]["num_classes"] == 2


def test_an_exported_file_loads_for_sampling(trained_toy, tmp_path):
    out = export_weights(trained_toy.run_dir / "checkpoints" / "step_00000002.pt", tmp_path / "m.safetensors")
    run = gentool.load_run(out, device="cpu")
    assert run.step == 2
    for key, value in trained_toy.ema.state_dict().items():
        assert torch.equal(run.sampling_model.state_dict()[key], value), key
    x = run.sample(2, labels=[0, 1], steps=3, progress=False)
    assert x.shape == (2, 1, 8, 8) and bool(x.isfinite().all())
    # and through the command line
    result = CliRunner().invoke(app, ["sample", str(out), "--n", "2", "--steps", "2", "--grid-only",
                                      "--device", "cpu", "--out", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "samples").glob("*.png"))


def test_the_default_name_and_a_missing_run(trained_toy_copy, tmp_path):
    run_dir = tmp_path / "runs" / "toy"  # the copy: the default name is inside the run directory
    out = export_weights(run_dir)
    assert out == run_dir / "toy_step00000002.safetensors" and out.exists()
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such run directory" in " ".join(result.stderr.split())
