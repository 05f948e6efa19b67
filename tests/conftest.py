"""Shared fixtures: a tiny recipe that trains in a second on the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GENTOOL_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

TINY_RECIPE = """
[run]
name = "tiny"
seed = 0
output_dir = "{out}"

[data]
name = "toy"
n = 64
image_size = 8

[schedule]
name = "linear"
timesteps = 50

[denoiser]
name = "unet"
in_channels = 1
image_size = 8
channels = 32
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = [4]
dropout = 0.0
class_cond = false

[train]
steps = 6
batch_size = 16
checkpoint_every = 3
log_every = 2

[[tasks]]
name = "sample"
n = 4
"""


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A toy recipe file whose run directory lives under ``tmp_path/runs``."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE.format(out=(tmp_path / "runs").as_posix()), encoding="utf-8")
    return path
