"""Preview grids while training runs ([train] preview_every, preview_steps): when, what, and that they change
nothing."""

from __future__ import annotations

import pytest
import torch
from _tiny import build, quiet_train, write_recipe
from PIL import Image

from gentool.engine.periodic import PreviewClock

pytestmark = pytest.mark.usefixtures("one_thread")

#: a preview after every step (any positive number of seconds has passed by the next step), 3 sampler steps
EVERY_STEP = "preview_every = 1e-9\npreview_steps = 3\nsample_n = 4"


def test_a_preview_is_due_every_preview_every_seconds_after_the_last_grid():
    now = [100.0]
    clock = PreviewClock(60.0, clock=lambda: now[0])  # training starts at 100 s
    due = []
    for t in (100.0, 159.9, 160.0):
        now[0] = t
        due.append(clock.due())
    assert due == [False, False, True]  # the first one minute into training
    now[0] = 163.0  # the preview took 3 s
    clock.restart()
    now[0] = 222.9
    assert not clock.due()
    now[0] = 223.0
    assert clock.due()
    never = PreviewClock(0.0, clock=lambda: now[0])
    now[0] = 1e12
    assert not never.due()


def test_previews_write_a_sequence_of_grids_the_newest_as_latest_and_the_loss_plot(tmp_path, monkeypatch):
    run = build(write_recipe(tmp_path, steps=3, checkpoint_every=3, log_every=1, train=EVERY_STEP, class_cond=True))
    calls = []
    sample = run.sample

    def recording(n, **kwargs):  # what each preview asks for: the same noise and labels every time
        calls.append((n, kwargs["steps"], kwargs["generator"].get_state(), kwargs["labels"].tolist()))
        return sample(n, **kwargs)

    monkeypatch.setattr(run, "sample", recording)
    result, log = quiet_train(run)
    samples = run.run_dir / "samples"
    assert result.step == 3
    assert sorted(p.name for p in samples.iterdir()) == ["latest.png", "step_00000001.png", "step_00000002.png",
                                                         "step_00000003.png"]
    assert (samples / "latest.png").read_bytes() == (samples / "step_00000003.png").read_bytes()
    assert Image.open(samples / "latest.png").size == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2)  # 2x2 tiles of 8x8, padding 2
    assert [(n, steps, labels) for n, steps, _, labels in calls] == [(4, 3, [0, 1, 0, 1])] * 3
    assert all(torch.equal(state, calls[0][2]) for _, _, state, _ in calls)  # one fixed start noise
    announced = [m for m in log if "a preview" in m]
    assert len(announced) == 1, log  # the path is printed once
    assert str(samples / "latest.png") in announced[0] and str(run.run_dir / "plots" / "loss.png") in announced[0]
    assert (run.run_dir / "plots" / "loss.png").is_file()


def test_previews_do_not_change_the_trained_weights_nor_an_exact_resume(tmp_path):
    plain = build(write_recipe(tmp_path, name="plain", steps=4, checkpoint_every=4, dropout=0.1,
                               train="preview_every = 0"))
    quiet_train(plain)
    straight = build(write_recipe(tmp_path, name="straight", steps=4, checkpoint_every=2, dropout=0.1,
                                  train=EVERY_STEP))
    quiet_train(straight)
    resumed_recipe = write_recipe(tmp_path, name="resumed", steps=2, checkpoint_every=2, dropout=0.1, train=EVERY_STEP)
    quiet_train(build(resumed_recipe))
    resumed = build(resumed_recipe, "train.steps=4")
    result, _ = quiet_train(resumed)
    assert result.resumed_from == 2 and result.step == 4
    assert len(list((straight.run_dir / "samples").glob("step_*.png"))) == 4
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, straight.model.state_dict()[key]), key
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_preview_every_must_be_zero_or_seconds(tmp_path):
    from gentool.recipe import RecipeError

    with pytest.raises(RecipeError, match="train.preview_every"):
        build(write_recipe(tmp_path, train="preview_every = -1.0"))
