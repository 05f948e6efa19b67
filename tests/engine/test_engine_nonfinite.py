"""A non-finite loss stops the run naming the step (or skips it); no weight is ever touched by it."""

from __future__ import annotations

import json

import pytest
import torch
from _engine_util import checkpoint
from _tiny import build, quiet_train, write_recipe
from torch import nn

import gentool
import gentool.plugins
from gentool.engine import nonfinite, optim
from gentool.engine import train as train_module

pytestmark = pytest.mark.usefixtures("one_thread")


class NanNet(nn.Module):
    """A one-conv denoiser whose output turns NaN from its ``after + 1``-th training call on."""

    prediction = "eps"
    cond_dim = None

    def __init__(self, after: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.after, self.calls = after, 0

    def forward(self, x, t, cond=None):
        out = self.conv(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out


def nan_net(*, after: int = 5) -> NanNet:
    """A test denoiser that breaks after a number of training steps.

    Args:
        after: training forward passes that stay finite.
    """
    return NanNet(after)


class NanPlugin:
    @gentool.hookimpl
    def gentool_register_denoisers(self, register):
        register("nan_net", nan_net)


@pytest.fixture(autouse=True)
def nan_plugin():
    gentool.plugins.reset(gentool.plugins.load_plugins(extra=[("nan_test", NanPlugin())]))
    yield
    gentool.plugins.reset(None)


def nan_recipe(tmp_path, steps=10, checkpoint_every=2, train="", log_every=2):
    return write_recipe(tmp_path, steps=steps, checkpoint_every=checkpoint_every, train=train, log_every=log_every,
                        denoiser="nan_net", denoiser_options="after = 5")


def test_a_nan_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    run = build(nan_recipe(tmp_path))
    with pytest.raises(nonfinite.NonFiniteLossError, match=r"non-finite loss at step 6\b") as info:
        quiet_train(run)
    last = run.run_dir / "checkpoints" / "step_00000004.pt"
    assert str(last) in str(info.value) and 'on_nan = "skip"' in str(info.value)
    assert sorted(p.name for p in last.parent.glob("step_*")) == ["step_00000002.pt", "step_00000004.pt"]
    state = checkpoint(run.run_dir, 4)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_skip_mode_leaves_the_weights_of_the_last_finite_step(tmp_path):
    run = build(nan_recipe(tmp_path, steps=8, checkpoint_every=1, train='on_nan = "skip"\nkeep_last = 10'))
    result, log = quiet_train(run)
    assert result.step == 8
    assert sum("skipping step" in m for m in log) == 3
    five, eight = checkpoint(run.run_dir, 5), checkpoint(run.run_dir, 8)
    assert not torch.equal(checkpoint(run.run_dir, 4)["model"]["denoiser.conv.weight"],
                           five["model"]["denoiser.conv.weight"])
    for key in five["model"]:
        assert torch.equal(five["model"][key], eight["model"][key])
        assert torch.equal(five["ema"][key], eight["ema"][key])
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["skipped"] for r in lines) == 3


@pytest.fixture
def gpu_style_checks(monkeypatch):
    """The CUDA path on the CPU: fused AdamW, non-finite steps gated on the device, read back late."""
    monkeypatch.setattr(optim, "use_fused", lambda device: True)
    monkeypatch.setattr(train_module, "deferred_checks", lambda device: True)


def test_deferred_checks_gate_the_update_and_stop_at_the_next_sync(tmp_path, gpu_style_checks):
    run = build(nan_recipe(tmp_path, steps=12, checkpoint_every=4, log_every=4))
    with pytest.raises(nonfinite.NonFiniteLossError, match=r"at step 6 \(seen at step 8; no weight"):
        quiet_train(run)
    assert not (run.run_dir / "checkpoints" / "step_00000008.pt").exists()
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert all(torch.isfinite(p).all() for p in run.ema.parameters())


def test_deferred_skip_is_exact(tmp_path, gpu_style_checks):
    run = build(nan_recipe(tmp_path, steps=8, checkpoint_every=1, train='on_nan = "skip"\nkeep_last = 10'))
    result, log = quiet_train(run)
    assert result.step == 8 and run_uses_fused(run)
    assert sum(int(m.split()[1]) for m in log if m.startswith("skipped ")) == 3  # reported at log steps
    five, eight = checkpoint(run.run_dir, 5), checkpoint(run.run_dir, 8)
    for key in five["model"]:
        assert torch.equal(five["model"][key], eight["model"][key])
        assert torch.equal(five["ema"][key], eight["ema"][key])
    # the fused kernel also undid its step count for the skipped steps
    assert all(int(s["step"]) == 5 for s in eight["optimizer"]["state"].values())


def run_uses_fused(run) -> bool:
    state = checkpoint(run.run_dir, 8)
    return all(group.get("fused") for group in state["optimizer"]["param_groups"])


@pytest.mark.parametrize("gated", [False, True], ids=["host-checked", "gated-on-device"])
def test_skipped_steps_keep_the_post_hoc_emas_profile_exact(tmp_path, monkeypatch, gated):
    """Steps 6-8 are skipped, so theta_6 = theta_7 = theta_8 = theta_5; eq. 1 then gives the power EMA at 8 as
    (5/8)^(gamma+1) of its value at 5 plus the rest of the profile's mass on theta_5 (EDM2 eq. 1 split at tau = 5)."""
    if gated:
        monkeypatch.setattr(optim, "use_fused", lambda device: True)
        monkeypatch.setattr(train_module, "deferred_checks", lambda device: True)
    run = build(nan_recipe(tmp_path, steps=8, checkpoint_every=1,
                           train='on_nan = "skip"\nkeep_last = 10\nphema_sigma_rels = [0.1]'))
    quiet_train(run)
    five, eight = checkpoint(run.run_dir, 5), checkpoint(run.run_dir, 8)
    gamma = 6.937203937601809  # sigma_rel 0.1 by eq. 3
    share = (5 / 8) ** (gamma + 1)
    for key, average in eight["phema"]["averages"][0].items():
        expected = share * five["phema"]["averages"][0][key].double() + (1 - share) * five["model"][key].double()
        assert torch.allclose(average.double(), expected, rtol=1e-5, atol=1e-6), key
