"""The tensorboard logger: a training run's event file read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import json
import sys

import pytest
import torch

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from _tiny import build, quiet_train, write_recipe  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_a_run_logs_its_losses_sample_grids_and_recipe_to_tensorboard(tmp_path):
    recipe = write_recipe(tmp_path, name="tb", steps=4, checkpoint_every=4, log_every=2,
                          train="sample_every = 4\nsample_n = 4")
    run = build(recipe, 'run.loggers=["jsonl", "tensorboard"]')
    _, messages = quiet_train(run)
    assert not [m for m in messages if "warning" in m], messages
    acc = _events(run.run_dir / "tensorboard")
    tags = acc.Tags()
    loss = acc.Scalars("loss")
    jsonl = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = {r["step"]: r["loss"] for r in jsonl if "loss" in r}
    assert [e.step for e in loss] == [2, 4] == sorted(expected)
    assert [e.value for e in loss] == pytest.approx([expected[2], expected[4]], rel=1e-6)  # float32 events
    assert {"lr", "grad_norm"} <= set(tags["scalars"])
    images = acc.Images("samples")
    assert [im.step for im in images] == [4]
    assert images[0].width > 8 and images[0].height > 8  # a grid of 4 8x8 images with padding
    assert any("recipe" in t for t in tags["tensors"])  # add_text is stored as a text tensor


def test_the_logger_on_its_own_and_a_missing_package(tmp_path, monkeypatch):
    from gentool_loggers.tensorboard import TensorBoardMissing, tensorboard

    logger = tensorboard(tmp_path, subdir="tb")
    logger.log_scalars(3, {"loss": 0.5, "skipped": 0, "bad": float("nan")})
    logger.log_image(3, "grid", torch.rand(3, 10, 12))
    logger.log_text(0, "recipe", "[run]\nname = 'x'")
    logger.close()
    acc = _events(tmp_path / "tb")
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(3, 0.5)]
    assert "bad" not in acc.Tags()["scalars"]  # a NaN is not plotted
    assert (acc.Images("grid")[0].width, acc.Images("grid")[0].height) == (12, 10)
    with pytest.raises(ValueError, match="subdir"):
        tensorboard(tmp_path, subdir="../elsewhere")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    with pytest.raises(TensorBoardMissing, match=r"pip install 'gentool\[tensorboard\]'"):
        tensorboard(tmp_path)
