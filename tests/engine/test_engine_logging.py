"""Metrics, plots, sample grids, the test loop and periodic evaluation with best.pt."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from _tiny import build, quiet_train, write_recipe
from PIL import Image

from gentool.engine import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")

HOOKS = """sample_every = 2
sample_n = 4
test_loss_every = 2
test_loss_timesteps = [5, 20, 900]
test_loss_batches = 1
keep_last = 2
[eval]
every = 2
metrics = ["fid"]
keep_best = true"""


@pytest.fixture
def fake_evaluation(monkeypatch):
    """A stand-in for gentool.evaluation: fid 5 at step 2, 3 at step 4, 9 at step 6."""
    calls = []

    def evaluate_in_training(run, step):
        calls.append((step, run.sampling_model is run.ema))
        torch.rand(100)  # as a real evaluation may: draws from the global generator
        return {"fid": {2: 5.0, 4: 3.0, 6: 9.0}[step], "kid": 0.1}

    module = types.ModuleType("gentool.evaluation")
    module.evaluate_in_training = evaluate_in_training
    monkeypatch.setitem(sys.modules, "gentool.evaluation", module)
    return calls


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_logs_plots_samples_tests_and_keeps_the_best_checkpoint(tmp_path, fake_evaluation):
    run = build(write_recipe(tmp_path, steps=6, checkpoint_every=3, train=HOOKS))
    result, log = quiet_train(run)
    run_dir = run.run_dir
    assert result.step == 6 and fake_evaluation == [(2, True), (4, True), (6, True)]
    lines = records(run_dir)
    train = [r for r in lines if "loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6]
    assert {"lr", "grad_norm", "steps_per_s", "img_per_s", "skipped"} <= set(train[0])
    assert train[-1]["lr"] == pytest.approx(1e-3) and train[0]["img_per_s"] == pytest.approx(
        8 * train[0]["steps_per_s"])
    tests = [r for r in lines if "test_loss/t=5" in r]
    assert [r["step"] for r in tests] == [2, 4, 6] and set(tests[0]) == {"step", "test_loss/t=5",
                                                                         "test_loss/t=20", "test_loss/t=49"}
    assert any("note:" in m and "T = 50" in m for m in log)
    evals = [r for r in lines if "eval/fid" in r]
    assert [(r["step"], r["eval/fid"]) for r in evals] == [(2, 5.0), (4, 3.0), (6, 9.0)]
    for name in ("loss", "test_loss", "eval"):
        assert Image.open(run_dir / "plots" / f"{name}.png").size[0] > 100
    for step in (2, 4, 6):
        assert Image.open(run_dir / "samples" / f"step_{step:08d}.png").size[0] > 8
    best = ckpt.load_checkpoint(ckpt.best_path(run_dir))
    assert best["step"] == 4 and best["best"] == {"metric": "fid", "value": 3.0, "step": 4,
                                                  "higher_is_better": False}
    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == ["step_00000004.pt", "step_00000006.pt"]
    assert ckpt.latest_good(run_dir)[0].name == "step_00000006.pt"


def test_periodic_work_does_not_change_the_trained_weights(tmp_path, fake_evaluation):
    plain = build(write_recipe(tmp_path, name="plain", steps=4, checkpoint_every=4, dropout=0.1))
    hooked = build(write_recipe(tmp_path, name="hooked", steps=4, checkpoint_every=4, dropout=0.1, train=HOOKS))
    quiet_train(plain)
    quiet_train(hooked)
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, hooked.model.state_dict()[key]), key


def test_training_goes_on_when_evaluation_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gentool.evaluation", None)  # import fails
    run = build(write_recipe(tmp_path, steps=2, checkpoint_every=2, train="[eval]\nevery = 1"))
    result, log = quiet_train(run)
    assert result.step == 2 and sum("evaluation is unavailable" in m for m in log) == 1


def test_text_progress_lines_when_no_live_bar(tmp_path):
    import gentool

    run = build(write_recipe(tmp_path, steps=4, checkpoint_every=4))
    log = []
    gentool.train(run, progress=True, log=log.append)  # GENTOOL_NO_PROGRESS is set: lines instead
    lines = [m for m in log if m.startswith("step ")]
    assert [m.split(":")[0] for m in lines] == ["step 2/4 (50%)", "step 4/4 (100%)"]
    assert "steps/s" in lines[0] and "img/s" in lines[0] and "loss" in lines[0]
    assert "left" in lines[0] and "left" not in lines[1]  # the time left, while there is some


def test_the_best_value_is_the_lowest_or_for_scores_the_highest():
    from gentool.engine.periodic import BestKeeper

    best = BestKeeper()
    assert best.update({"loss_t/10": 0.5, "loss_t/49": 0.9}, 2, ["loss_t"]) and best.record["metric"] == "loss_t/10"
    assert not best.update({"loss_t/10": 0.6}, 4, ["loss_t"])
    assert best.update({"loss_t/10": 0.4}, 6, ["loss_t"]) and best.record["step"] == 6
    score = BestKeeper()
    assert score.update({"isc": 2.0}, 2, ["isc"]) and not score.update({"isc": 1.5}, 4, ["isc"])
    assert score.update({"isc": 3.0}, 6, ["isc"]) and score.record["higher_is_better"]
