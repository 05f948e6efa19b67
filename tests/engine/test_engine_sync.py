"""The training step never waits for the device, and the data can live on the device.

On a GPU every host read of a device tensor (``.item()``, ``bool()``,
``.tolist()``) stalls the CPU until the GPU catches up, so the engine reads
back only at log and checkpoint steps. The CPU has no device to wait for,
so these tests count the host reads themselves, with the engine in the
mode it uses on CUDA (fused AdamW gated by ``found_inf``, non-finite checks
deferred) and the train split gathered on the device.
"""

from __future__ import annotations

import collections

import pytest
import torch

import gentool
from gentool.engine import optim, train as train_mod
from _tiny import build, quiet_train as train

CONDITIONAL = ["denoiser.class_cond=true", 'conditioner.name="class_embedding"', "conditioner.num_classes=2"]
HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def weights(run):
    return {k: v.clone() for k, v in run.model.state_dict().items()}


def test_data_on_the_device_gives_the_loaders_batches_and_weights(tiny_recipe):
    on = build(tiny_recipe, *CONDITIONAL, "run.name='on'", "train.data_on_device=true")
    off = build(tiny_recipe, *CONDITIONAL, "run.name='off'", "train.data_on_device=false")
    _, log_on = train(on)
    _, log_off = train(off)
    assert any("held on cpu" in m for m in log_on), log_on
    assert not any("held on" in m for m in log_off), log_off
    a, b = weights(on), weights(off)
    assert a.keys() == b.keys()
    for key in a:  # the same order, the same images, the same labels: the same trajectory, bit for bit
        assert torch.equal(a[key], b[key]), key


def test_data_on_the_device_resumes_exactly(tiny_recipe):
    whole = build(tiny_recipe, *CONDITIONAL, "run.name='whole'", "train.data_on_device=true")
    train(whole)
    part = build(tiny_recipe, *CONDITIONAL, "run.name='part'", "train.data_on_device=true", "train.steps=3")
    train(part)
    resumed = build(tiny_recipe, *CONDITIONAL, "run.name='part'", "train.data_on_device=true")
    result, log = train(resumed)
    assert result.resumed_from == 3 and any("resuming" in m for m in log)
    a, b = weights(whole), weights(resumed)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_data_set_that_cannot_be_held_falls_back_to_the_loader(tiny_recipe, monkeypatch):
    monkeypatch.setattr("gentool.engine.data.device_batches", lambda *a, **k: None)
    run = build(tiny_recipe, "train.data_on_device=true", "train.steps=1")
    result, log = train(run)
    assert result.step == 1 and any("using a data loader" in m for m in log), log


@pytest.mark.parametrize("on_device", [True, False])
def test_a_label_past_the_last_class_is_named_before_it_reaches_the_network(tiny_recipe, on_device):
    run = build(tiny_recipe, *CONDITIONAL, f"train.data_on_device={str(on_device).lower()}")
    run.dataset("train").labels[5] = 7  # the toy data set has 2 classes; the recipe says 2
    with pytest.raises(ValueError, match=r"class labels must be in 0\.\.1 \(or -1 for none\), got \[7\]"):
        train(run)
    assert run.step == 0


def test_the_step_reads_nothing_back_between_log_steps(tiny_recipe, monkeypatch):
    """With the CUDA settings, only log and checkpoint steps read a tensor on the host."""
    monkeypatch.setattr(optim, "use_fused", lambda device: True)  # AdamW skips a bad step via found_inf
    monkeypatch.setattr(train_mod, "deferred_checks", lambda device: True)
    run = build(tiny_recipe, *CONDITIONAL, "train.data_on_device=true", "train.steps=8", "train.log_every=4",
                "train.checkpoint_every=8", "train.ema_decay=0.9")
    assert run.model.conditioner is not None and run.ema is not None
    reads: collections.Counter = collections.Counter()
    where: dict[str, int | None] = {"step": None}

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args):
            if where["step"] is not None:
                reads[where["step"]] += 1
            return original(self, *args)
        return read

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    step, after = train_mod.Trainer._step, train_mod.Trainer._after_step

    def traced_step(self, *args):
        where["step"] = self.run.step + 1
        return step(self, *args)

    def traced_after(self, *args):
        try:
            return after(self, *args)
        finally:
            where["step"] = None

    monkeypatch.setattr(train_mod.Trainer, "_step", traced_step)
    monkeypatch.setattr(train_mod.Trainer, "_after_step", traced_after)
    result, _ = train(run)
    assert result.step == 8
    assert {s for s in range(1, 9) if reads[s]} == {4, 8}, dict(reads)  # log steps only (8 also saves)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.set_sync_debug_mode")
def test_cuda_steps_between_log_steps_do_not_synchronise(tiny_recipe, monkeypatch):
    """On a GPU, torch itself reports any synchronising call in the steps between log steps
    (after two warm-up steps, in which torch.compile and cuDNN autotuning synchronise)."""
    run = gentool.build(gentool.load_recipe(tiny_recipe, overrides=[*CONDITIONAL, "train.steps=8",
                                                                     "train.log_every=4", "train.checkpoint_every=8"]),
                        device="cuda")
    step, after = train_mod.Trainer._step, train_mod.Trainer._after_step

    def strict_step(self, *args):
        step_no = self.run.step + 1  # steps 1-2 compile and autotune (both synchronise); 4 and 8 log
        quiet = step_no > 2 and step_no % 4 != 0
        torch.cuda.set_sync_debug_mode("error" if quiet else "default")
        return step(self, *args)

    def strict_after(self, *args):
        try:
            return after(self, *args)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(train_mod.Trainer, "_step", strict_step)
    monkeypatch.setattr(train_mod.Trainer, "_after_step", strict_after)
    result, log = train(run)
    assert result.step == 8 and any("held on cuda" in m for m in log), log
