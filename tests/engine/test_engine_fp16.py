"""fp16 training: the precision choice by compute capability, loss scaling, and skip-on-overflow (on the CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from _engine_util import checkpoint

from _tiny import build, quiet_train, write_recipe
from gentool.config import TrainConfig
from gentool.engine import loss_scale
from gentool.engine.loss_scale import LossScaler
from gentool.engine.step import float_net

pytestmark = pytest.mark.usefixtures("one_thread")
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize("capability, expected", [((6, 0), torch.float16), ((7, 0), torch.float16),
                                                  ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((8, 9), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_picks_bf16_from_compute_capability_8_and_fp16_below(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    auto = TrainConfig(precision="auto")
    assert auto.autocast_dtype(CUDA) == expected
    assert auto.bf16_on(CUDA) == (expected == torch.bfloat16) and auto.fp16_on(CUDA) == (expected == torch.float16)
    assert auto.autocast_dtype(CPU) is None  # fp32 on the CPU
    assert TrainConfig(precision="fp32").autocast_dtype(CUDA) is None
    assert TrainConfig(precision="bf16").autocast_dtype(CUDA) == torch.bfloat16  # asked for: whatever the GPU
    assert TrainConfig(precision="fp16").autocast_dtype(CUDA) == torch.float16
    assert TrainConfig(precision="fp16").fp16_on(CPU)


def test_loss_scaling_keeps_the_small_fp16_gradients_that_underflow_without_it(trained_toy):
    """fp32 gradients are the reference: scaled by S = 2**16 and unscaled, fp16 ones match them; unscaled
    fp16 gradients flush to zero below about 6e-8 (Micikevicius et al. 2018, the reason for the scale)."""
    model = trained_toy.model
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 50, (4,), generator=g)
    labels = torch.tensor([0, 1, -1, 1])

    def grads(autocast, scaler):
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        opt.zero_grad()
        scaler.scale((float_net(model, autocast, "cpu")(x, t, labels) ** 2).mean()).backward()
        scaler.unscale_(opt)
        assert not bool(scaler.overflow(opt, x))
        scaler.update()
        out = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        model.zero_grad(set_to_none=True)
        return out

    ref = grads(False, LossScaler(False, CPU))
    scaled, plain = grads(torch.float16, LossScaler(True, CPU)), grads(torch.float16, LossScaler(False, CPU))
    err = lambda g: float((g - ref).norm() / ref.norm())  # noqa: E731
    assert err(scaled) < 1e-3 and err(plain) > 2 * err(scaled)  # measured: 4.3e-4 and 1.6e-3
    assert int((plain == 0).sum()) > int((scaled == 0).sum()) + 100  # the underflowed ones


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_an_fp16_run_trains_on_the_cpu_and_logs_its_loss_scale(tmp_path):
    fp32 = build(write_recipe(tmp_path, name="fp32", steps=2, checkpoint_every=2, log_every=1))
    fp16 = build(write_recipe(tmp_path, name="fp16", steps=2, checkpoint_every=2, log_every=1,
                              train='precision = "fp16"'))
    quiet_train(fp32)
    result, _ = quiet_train(fp16)
    assert result.step == 2
    a, b = _metrics(fp32.run_dir), _metrics(fp16.run_dir)
    assert [r["skipped"] for r in b] == [0, 0]
    assert [r["loss_scale"] for r in b] == [2.0**16, 2.0**16]
    # the same draws (step 1's zero-initialised output makes both losses mean(eps^2)); after one update
    # float16 activations change the loss by a little only
    assert b[0]["loss"] == a[0]["loss"]
    assert b[1]["loss"] == pytest.approx(a[1]["loss"], rel=2e-2) and b[1]["loss"] != a[1]["loss"]
    state = checkpoint(fp16.run_dir, 2)
    assert state["grad_scaler"]["scale"] == 2.0**16
    assert any(not torch.equal(v, fp16.model.state_dict()[k]) for k, v in build(
        write_recipe(tmp_path, name="fresh", steps=2)).model.state_dict().items())  # it trained


def test_an_overflow_skips_the_step_and_halves_the_scale_without_stopping(tmp_path, monkeypatch):
    monkeypatch.setattr(loss_scale, "INIT_SCALE", 2.0**40)  # loss * 2**40 overflows float16 (max 65504)
    run = build(write_recipe(tmp_path, name="over", steps=2, checkpoint_every=1, log_every=1,
                             train='precision = "fp16"\non_nan = "stop"'))
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in run.ema.state_dict().items()}
    result, messages = quiet_train(run)
    assert result.step == 2 and not result.interrupted  # on_nan = "stop" is for a non-finite loss, not this
    lines = _metrics(run.run_dir)
    assert [r["skipped"] for r in lines] == [1, 1]
    assert [r["loss_scale"] for r in lines] == [2.0**39, 2.0**38]  # halved after each overflow
    assert [r["loss"] for r in lines] == [None, None]  # no finite step to average: NaN, written as null
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, before[key]), key  # no update
    for key, value in run.ema.state_dict().items():
        assert torch.equal(value, ema_before[key]), key
    assert checkpoint(run.run_dir, 2)["grad_scaler"]["scale"] == 2.0**38
    # resumed, the run carries on with the saved scale
    monkeypatch.setattr(loss_scale, "INIT_SCALE", 2.0**16)
    again = build(write_recipe(tmp_path, name="over", steps=3, checkpoint_every=1, log_every=1,
                               train='precision = "fp16"\non_nan = "stop"'))
    quiet_train(again)
    assert _metrics(again.run_dir)[-1]["loss_scale"] == 2.0**37
