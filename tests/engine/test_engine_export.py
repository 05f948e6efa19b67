"""gentool export: EMA weights as safetensors with the recipe in the metadata, loadable for sampling."""

from __future__ import annotations

import tomllib

import pytest
import torch
from _engine_util import build, checkpoint, one_thread, quiet_train, write_recipe
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

import gentool
from gentool.cli import app
from gentool.engine.export import export_weights

_threads = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture
def trained(tmp_path):
    run = build(write_recipe(tmp_path, steps=3, checkpoint_every=3, class_cond=True))
    quiet_train(run)
    return run


def test_export_writes_the_ema_weights_and_the_recipe(trained, tmp_path):
    out = tmp_path / "model.safetensors"
    result = CliRunner().invoke(app, ["export", str(trained.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    state = checkpoint(trained.run_dir, 3)
    weights = load_file(str(out))
    assert weights.keys() == state["ema"].keys()
    for key, value in state["ema"].items():
        assert torch.equal(weights[key], value), key
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["ema"])  # EMA, not online
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["step"] == "3" and meta["weights"] == "ema"
    recipe = tomllib.loads(meta["recipe"])
    assert recipe["denoiser"]["channels"] == 32 and recipe["conditioner"]["num_classes"] == 2


def test_an_exported_file_loads_for_sampling(trained, tmp_path):
    out = export_weights(trained.run_dir / "checkpoints" / "step_00000003.pt", tmp_path / "m.safetensors")
    run = gentool.load_run(out, device="cpu")
    assert run.step == 3
    for key, value in trained.ema.state_dict().items():
        assert torch.equal(run.sampling_model.state_dict()[key], value), key
    x = run.sample(2, labels=[0, 1], steps=3, progress=False)
    assert x.shape == (2, 1, 8, 8) and bool(x.isfinite().all())
    # and through the command line
    result = CliRunner().invoke(app, ["sample", str(out), "--n", "2", "--steps", "2", "--grid-only",
                                      "--device", "cpu", "--out", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "samples").glob("*.png"))


def test_the_default_name_and_a_missing_run(trained, tmp_path):
    out = export_weights(trained.run_dir)
    assert out == trained.run_dir / "toy_step00000003.safetensors" and out.exists()
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such run directory" in " ".join(result.stderr.split())
