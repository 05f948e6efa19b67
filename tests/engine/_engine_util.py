"""Helpers for the engine tests: a toy recipe, subprocess runs, reading checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

import gentool

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")

RECIPE = """
[run]
name = "{name}"
seed = 3
output_dir = "{out}"

[data]
name = "toy"
n = 64
image_size = 8

[schedule]
name = "linear"
timesteps = 50

[denoiser]
name = "{denoiser}"
{denoiser_options}

{conditioner}

[train]
steps = {steps}
batch_size = 8
lr = 1e-3
warmup_steps = 2
ema_decay = 0.9
checkpoint_every = {checkpoint_every}
log_every = {log_every}
{train}

[sampler]
steps = 4
"""

UNET = """in_channels = 1
image_size = 8
channels = 32
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = [4]
dropout = {dropout}
class_cond = {class_cond}"""


def write_recipe(tmp_path: Path, *, name: str = "toy", steps: int = 6, checkpoint_every: int = 2,
                 log_every: int = 2, train: str = "", denoiser: str = "unet", denoiser_options: str | None = None,
                 dropout: float = 0.0, class_cond: bool = False, file: str | None = None) -> Path:
    """A toy recipe whose run directory is ``tmp_path/runs/<name>``."""
    if denoiser_options is None:
        denoiser_options = UNET.format(dropout=dropout, class_cond=str(class_cond).lower())
    conditioner = '[conditioner]\nname = "class_embedding"\nnum_classes = 2\np_uncond = 0.2' if class_cond else ""
    text = RECIPE.format(name=name, out=(tmp_path / "runs").as_posix(), steps=steps,
                         checkpoint_every=checkpoint_every, log_every=log_every, train=train, denoiser=denoiser,
                         denoiser_options=denoiser_options, conditioner=conditioner)
    path = tmp_path / (file or f"{name}.toml")
    path.write_text(text, encoding="utf-8")
    return path


def build(recipe: Path, *overrides: str) -> gentool.Run:
    return gentool.build(gentool.load_recipe(recipe, overrides=list(overrides)), device="cpu")


def quiet_train(run, **kwargs):
    messages: list[str] = []
    result = gentool.train(run, progress=False, log=messages.append, **kwargs)
    return result, messages


def env() -> dict[str, str]:
    """The environment of every subprocess run: no bars, one thread (the same float sums everywhere)."""
    return {**os.environ, "GENTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "GENTOOL_DISABLE_PLUGIN_AUTOLOAD": "1"}


def gentool_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "gentool", *map(str, args)]


def run_gentool(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(gentool_cmd(*args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 90, what: str = "") -> None:
    """Poll until ``predicate()``; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, errs = proc.communicate()
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}:\n{out}\n{errs}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def checkpoint(run_dir: Path, step: int) -> dict:
    path = run_dir / "checkpoints" / f"step_{step:08d}.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


def one_thread():
    """A fixture body: torch on one thread for the test (the CI machine has two busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
