"""Two processes through torchrun on the CPU (gloo): DDP trains, rank 0 alone writes."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from _engine_util import ROOT, TORCHRUN, env
from _tiny import write_recipe

from gentool.engine import checkpoint as ckpt


@pytest.mark.parametrize("on_device", [False, True], ids=["loader", "data-on-device"])
def test_two_gloo_processes_train_and_write_one_set_of_checkpoints(tmp_path, on_device):
    recipe = write_recipe(tmp_path, name="ddp", steps=4, checkpoint_every=2, class_cond=True,
                          train=f"data_on_device = {str(on_device).lower()}")
    run_dir = tmp_path / "runs" / "ddp"
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "gentool", "run", str(recipe),
           "--no-tasks"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("starting a new run") == 1  # only rank 0 speaks
    assert ("is held on cpu" in proc.stderr + proc.stdout) == on_device  # each rank gathers its slice

    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == ["step_00000002.pt", "step_00000004.pt"]
    assert not list((run_dir / "checkpoints").glob(".*"))  # no half-written files
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]  # one writer
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "step_00000004.pt")
    assert state["data"]["world"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["generator"], state["rng"][1]["generator"])  # own noise per rank
    assert not any(k.startswith("module.") for k in state["model"])  # the plain module, not the DDP wrapper
    assert all(torch.isfinite(v).all() for v in state["model"].values())
