"""Training a run on to more steps: the earlier task outputs are kept by step, and the learning rate's course
is said."""

from __future__ import annotations

import math

import pytest
from _tiny import write_recipe

import gentool
from gentool.outputs import keep_earlier, note_step

pytestmark = pytest.mark.usefixtures("one_thread")


def test_outputs_of_another_step_move_into_a_step_folder_and_those_of_the_same_step_stay(tmp_path):
    folder = tmp_path / "sample"
    (folder / "images").mkdir(parents=True)
    (folder / "grid.png").write_bytes(b"step 1200")
    (folder / "step_00000500").mkdir()  # kept by an earlier call: stays where it is
    note_step(folder, 1200)
    assert keep_earlier(folder, 1200) is None and (folder / "grid.png").exists()  # the same step: written over
    kept = keep_earlier(folder, 2400)
    assert kept == folder / "step_00001200"
    assert (kept / "grid.png").read_bytes() == b"step 1200" and (kept / "images").is_dir()
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000500", "step_00001200"]
    (folder / "grid.png").write_bytes(b"unnoted")  # from a gentool that noted no step: made_at decides
    assert keep_earlier(folder, 2400) is None and (folder / "grid.png").exists()
    assert keep_earlier(folder, 2400, made_at=1200) == folder / "step_00001200.1"  # never mixed with the first


def run(recipe, steps):
    log: list[str] = []
    result = gentool.run_recipe(recipe, overrides=[f"train.steps={steps}"], progress=False, log=log.append)
    return result, log


def test_training_on_keeps_the_earlier_grid_and_says_what_the_learning_rate_does(tmp_path):
    recipe = write_recipe(tmp_path, steps=6, checkpoint_every=6, train='lr_schedule = "cosine"')
    recipe.write_text(recipe.read_text() + '\n[[tasks]]\nname = "sample"\nn = 2\n', encoding="utf-8")
    first, _ = run(recipe, 6)
    grid = first.run.run_dir / "sample" / "grid.png"
    before = grid.read_bytes()
    _, log = run(recipe, 10)
    kept = first.run.run_dir / "sample" / "step_00000006"
    assert (kept / "grid.png").read_bytes() == before and grid.read_bytes() != before
    assert sum(f"kept the earlier outputs of sample in {kept}" in m for m in log) == 1
    # lr 1e-3 after 2 warm-up steps (write_recipe), a half cosine to 0 at train.steps: step 5 of the 6-step curve
    # was the last, step 6 is the first of the 10-step curve
    last = 1e-3 * (1 + math.cos(math.pi * (5 - 2) / (6 - 2))) / 2
    next_ = 1e-3 * (1 + math.cos(math.pi * (6 - 2) / (10 - 2))) / 2
    note = [m for m in log if "lr_schedule" in m]
    assert len(note) == 1 and f"{last:.3g} (step 6) to {next_:.3g} (step 7)" in note[0], log
    assert "train.steps = 10, not 6" in note[0]
    _, same = run(recipe, 10)  # nothing to train: the same step's outputs are written over, nothing said
    assert not (first.run.run_dir / "sample" / "step_00000010").exists()
    assert not [m for m in same if "lr_schedule" in m or "kept" in m]
