"""Run directories written before the design-space redesign still load, sample and resume.

``tests/golden/run_v1`` was trained for 2 steps by gentool before the noise
process became a component (its ``recipe.resolved.toml`` has no ``[process]``
table and its checkpoint no parameterisation record); its samples at the time
are in ``tests/golden/run_v1_sample.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gentool
from _tiny import copy_run, single_thread

DATA = Path(__file__).parent / "golden" / "run_v1"
SAMPLE = Path(__file__).parent / "golden" / "run_v1_sample.safetensors"


def test_an_old_run_directory_loads_and_samples_as_it_did(tmp_path):
    run_dir = copy_run(DATA, tmp_path / "run_v1")
    with single_thread():
        run = gentool.load_run(run_dir, device="cpu")
        x = run.sample(4, labels=[0, 1, 0, 1], progress=False, generator=run.generator(1))
    assert run.step == 2
    assert torch.equal(x, load_file(SAMPLE)["sample"])


def test_an_old_run_directory_resumes_exactly(tmp_path):
    """Resumed from its step-2 checkpoint to step 4, it equals the same recipe trained 4 steps in one go."""
    run_dir = copy_run(DATA, tmp_path / "runs" / "run_v1")
    recipe_file = run_dir / "recipe.resolved.toml"
    with single_thread():
        resumed = gentool.build(gentool.load_recipe(recipe_file, overrides=["train.steps=4",
                                                                            f"run.output_dir='{run_dir.parent.as_posix()}'"]),
                                device="cpu")
        messages: list[str] = []
        result = gentool.train(resumed, progress=False, log=messages.append)
        assert result.resumed_from == 2, messages
        fresh = gentool.build(gentool.load_recipe(recipe_file, overrides=[
            "train.steps=4", f"run.output_dir='{(tmp_path / 'fresh').as_posix()}'"]), device="cpu")
        gentool.train(fresh, progress=False, log=lambda m: None)
    for (name, a), (_, b) in zip(resumed.model.state_dict().items(), fresh.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_checkpoints_record_the_parameterisation_and_a_different_one_is_refused(tmp_path):
    """What the network outputs is stored with its checkpoints; loading it as something else is one clear error."""
    import tomli_w

    from gentool.engine.checkpoint import CheckpointError

    run_dir = copy_run(DATA, tmp_path / "runs" / "run_v1")
    recipe_file = run_dir / "recipe.resolved.toml"
    with single_thread():
        run = gentool.build(gentool.load_recipe(recipe_file, overrides=[
            "train.steps=3", f"run.output_dir='{run_dir.parent.as_posix()}'"]), device="cpu")
        gentool.train(run, progress=False, log=lambda m: None)
    state = torch.load(run_dir / "checkpoints" / "step_00000003.pt", map_location="cpu", weights_only=True)
    assert state["parameterisation"] == {"name": "v"}
    data = gentool.load_recipe(recipe_file).to_dict()
    data["objective"]["prediction"] = "x0"  # the recipe now claims the network outputs x0
    (run_dir / "recipe.resolved.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError, match="trained to output 'v'.*reads 'x0'"):
        gentool.load_run(run_dir / "checkpoints" / "step_00000003.pt", device="cpu")
