"""Shared fixtures: tiny recipes and runs that build or train in a second on the CPU (their makers: _tiny.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("GENTOOL_NO_PROGRESS", "1")
# one torch thread for the whole suite, whatever the machine's load: training a new run with gentool's default
# takes every idle core (gentool/threads.py), and two runs of one test must not differ in their float sums
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# a trained feature extractor in the user's cache (gentool features train) must not change what tests measure
os.environ["GENTOOL_CACHE_DIR"] = tempfile.mkdtemp(prefix="gentool-test-cache-")

from _tiny import (TRAINED_TOY, TwoPoints, build, copy_run, quiet_train, recipe_text, single_thread,  # noqa: E402
                   write_recipe)

from gentool.model import DiffusionModel  # noqa: E402
from gentool.testing import tiny_run  # noqa: E402

TINY_RECIPE = recipe_text("{out}", name="tiny", run="seed = 0",
                          train="steps = 6\nbatch_size = 16\ncheckpoint_every = 3\nlog_every = 2",
                          tail='[[tasks]]\nname = "sample"\nn = 4')
"""A toy recipe template (format it with ``out``): trains 6 steps, checkpoints at 3 and 6, samples 4 images."""


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A toy recipe file whose run directory lives under ``tmp_path/runs``."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE.format(out=(tmp_path / "runs").as_posix()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def trained_toy(tmp_path_factory):
    """The engine's class-conditional toy recipe trained for 2 steps (one checkpoint, at 2), once a session.

    A built :class:`gentool.Run`, shared: read it and its run directory, never
    change them; a test that writes into the run takes :func:`trained_toy_copy`.
    """
    with single_thread():
        run = build(write_recipe(tmp_path_factory.mktemp("trained_toy"), **TRAINED_TOY))
        result, _ = quiet_train(run)
    assert result.step == 2
    return run


@pytest.fixture
def trained_toy_copy(trained_toy, tmp_path) -> Path:
    """The recipe of :func:`trained_toy` at ``tmp_path/toy.toml``, a copy of its trained run under ``tmp_path/runs``."""
    recipe = write_recipe(tmp_path, **TRAINED_TOY)
    copy_run(trained_toy.run_dir, tmp_path / "runs" / trained_toy.run_dir.name)
    return recipe


@pytest.fixture(scope="module")
def task_run(tmp_path_factory):
    """A built, untrained class-conditional tiny run (T = 20) for the task tests, one a module.

    :func:`gentool.testing.tiny_run` with its output layer perturbed by 0.2, so
    that predictions are neither 0 nor alike for every input.
    """
    return tiny_run(tmp_path_factory.mktemp("task_run"), conditional=True, perturb=0.2)


@pytest.fixture(scope="module")
def two_point_run(tmp_path_factory):
    """A tiny unconditional run (T = 20) whose model is the exact optimal denoiser of the two-point data set."""
    run = tiny_run(tmp_path_factory.mktemp("two_points"), conditional=False)
    run.model, run.ema = DiffusionModel(TwoPoints(run.diffusion.alphas_cumprod_64)), None
    return run
