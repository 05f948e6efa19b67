"""Helpers for the engine tests: subprocess runs, reading checkpoints; the toy recipe and training are in _tiny."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


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

