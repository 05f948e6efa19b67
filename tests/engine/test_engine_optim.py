"""EMA against its formula, warm-up, gradient accumulation, bf16 autocast and torch.compile on the CPU."""

from __future__ import annotations

import pytest
import torch
from _engine_util import checkpoint
from _tiny import TRAINED_TOY, build, quiet_train, write_recipe
from torch import nn

from gentool.engine import accel
from gentool.engine.ema import ema_decay, ema_update
from gentool.engine import train as train_module
from gentool.engine.optim import clip_gradients, lr_at
from gentool.devices import compile_default

pytestmark = pytest.mark.usefixtures("one_thread")


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("stat", torch.zeros(2))


def test_ema_update_is_the_formula_for_parameters_and_copies_buffers():
    torch.manual_seed(0)
    ema, model = WithBuffer(), WithBuffer()
    model.stat.fill_(7.0)
    before = {k: v.clone().double() for k, v in ema.named_parameters()}
    ema_update(ema, model, 0.75)
    for name, p in model.named_parameters():
        expected = 0.75 * before[name] + 0.25 * p.detach().double()  # theta_ema <- d theta_ema + (1 - d) theta
        assert torch.allclose(dict(ema.named_parameters())[name].double(), expected, atol=1e-7)
    assert torch.equal(ema.stat, model.stat)  # copied, not averaged


def test_a_false_gate_leaves_the_ema_untouched_and_a_true_one_is_the_formula():
    ema, model = WithBuffer(), WithBuffer()
    before = [p.clone() for p in ema.parameters()]
    ema_update(ema, model, 0.5, gate=torch.tensor(False))
    assert all(torch.equal(a, b) for a, b in zip(before, ema.parameters()))
    ema_update(ema, model, 0.75, gate=torch.tensor(True))
    for e, b, p in zip(ema.parameters(), before, model.parameters()):
        assert torch.allclose(e, 0.75 * b + 0.25 * p.detach(), atol=1e-7)


def test_ema_decay_warm_up_and_lr_warm_up_values():
    assert ema_decay(0.9999, 0) == pytest.approx(1 / 10)
    assert ema_decay(0.9999, 90) == pytest.approx(91 / 100)
    assert ema_decay(0.9, 1000) == 0.9 and ema_decay(0.9999, 5, warmup=False) == 0.9999
    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(0, 3e-4, 0) == 3e-4


@pytest.mark.parametrize("schedule, halfway, quarter", [("cosine", 0.5, (1 + 2 ** -0.5) / 2), ("linear", 0.5, 0.75)])
def test_a_decaying_lr_follows_its_closed_form_after_the_warm_up(schedule, halfway, quarter):
    # warm-up 4 of 104 steps: the decay spans the 100 steps after it
    assert [lr_at(s, 2.0, 4, schedule, 104) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    assert lr_at(4, 2.0, 4, schedule, 104) == pytest.approx(2.0)
    assert lr_at(4 + 25, 2.0, 4, schedule, 104) == pytest.approx(2.0 * quarter)
    assert lr_at(4 + 50, 2.0, 4, schedule, 104) == pytest.approx(2.0 * halfway)
    assert lr_at(104, 2.0, 4, schedule, 104) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(500, 2.0, 4, schedule, 104) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at 0
    assert lr_at(50, 2.0, 4, "constant", 104) == 2.0


def test_a_training_run_sets_the_cosine_lr_of_each_step(tmp_path):
    import json
    import math

    recipe = write_recipe(tmp_path, steps=6, checkpoint_every=6, log_every=1, train='lr_schedule = "cosine"')
    run = build(recipe)
    quiet_train(run)
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["lr"] for r in lines if "lr" in r}
    # lr 1e-3 and 2 warm-up steps (write_recipe); the decay spans 0-based steps 2..5 of 6; metrics log step s + 1
    expected = {1: 0.5e-3, 2: 1e-3, **{s + 1: 1e-3 * (1 + math.cos(math.pi * (s - 2) / 4)) / 2 for s in range(2, 6)}}
    assert logged.keys() >= expected.keys()
    for step, lr in expected.items():
        assert logged[step] == pytest.approx(lr, rel=1e-6), step


def test_the_ema_of_a_training_run_follows_its_formula(tmp_path):
    recipe = write_recipe(tmp_path, steps=4, checkpoint_every=1, train="keep_last = 10")
    run = build(recipe)
    theta0 = {k: v.clone().double() for k, v in run.model.state_dict().items()}
    quiet_train(run)
    names = [n for n, _ in run.model.named_parameters()]
    ema = {n: theta0[n] for n in names}  # the EMA starts at the initial weights
    for k in range(1, 5):
        state = checkpoint(run.run_dir, k)
        d = min(0.9, (1 + (k - 1)) / (10 + (k - 1)))  # update n = k - 1, ema_decay = 0.9, warm-up on
        ema = {n: d * ema[n] + (1 - d) * state["model"][n].double() for n in names}
        for n in names:
            assert torch.allclose(state["ema"][n].double(), ema[n], atol=1e-6), (k, n)
    assert not torch.allclose(ema[names[0]], theta0[names[0]])


def test_gradient_accumulation_splits_the_same_global_batch(tmp_path, monkeypatch):
    grads = []

    def capture(params, max_norm):
        params = list(params)
        grads.append([p.grad.clone() for p in params])
        return clip_gradients(params, max_norm)

    monkeypatch.setattr(train_module, "clip_gradients", capture)
    for name, accum in (("one", 1), ("four", 4)):
        run = build(write_recipe(tmp_path, name=name, steps=1, checkpoint_every=1, train=f"grad_accum = {accum}"))
        result, _ = quiet_train(run)
    one, four = grads
    assert len(one) == len(four) and any(float(g.abs().max()) > 1e-3 for g in one)
    for a, b in zip(one, four):  # the same t, eps and images: the same gradient of the batch mean
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_bf16_autocast_trains_on_the_cpu_when_asked(tmp_path):
    run = build(write_recipe(tmp_path, steps=2, checkpoint_every=2, train='precision = "bf16"'))
    assert accel.uses_bf16(run)
    result, _ = quiet_train(run)
    assert result.step == 2 and result.loss == result.loss  # finite, not NaN
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # autocast, not a cast of the weights


def test_compile_settings(monkeypatch):
    from gentool.devices import compile_backend

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_default("auto", cuda) and not compile_default("auto", cpu)
    assert compile_default(True, cpu) and not compile_default(False, cuda)
    monkeypatch.delenv(accel.COMPILE_BACKEND_ENV, raising=False)
    assert compile_backend() == "inductor"
    monkeypatch.setenv(accel.COMPILE_BACKEND_ENV, "aot_eager")
    assert compile_backend() == "aot_eager" and compile_backend("eager") == "eager"


@pytest.mark.parametrize("mode", ["default", "max-autotune-no-cudagraphs", "reduce-overhead"])
def test_compile_mode_reaches_torch_compile_in_training_and_bench(tmp_path, monkeypatch, mode):
    import gentool.devices
    from gentool.bench import BenchSettings

    calls = []

    def fake_compile(fn, **kwargs):
        calls.append(kwargs)
        return fn

    monkeypatch.setattr(gentool.devices.torch, "compile", fake_compile)
    run = build(write_recipe(tmp_path, steps=1, checkpoint_every=1), "run.compile=true",
                f'run.compile_mode="{mode}"')
    _, log = quiet_train(run)
    want = None if mode == "default" else mode
    assert [c["mode"] for c in calls] == [want] and calls[0]["dynamic"] is False
    assert any(f"mode {mode}" in m for m in log), log
    assert BenchSettings().resolved(run).compile_mode == want
    assert BenchSettings(compile_mode="max-autotune").resolved(run).compile_mode == "max-autotune"  # the flag wins


def test_a_misspelt_compile_mode_names_the_choices(tmp_path):
    from gentool.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"run\.compile_mode.*max-autotune-no-cudagraphs"):
        build(write_recipe(tmp_path), 'run.compile_mode="max_autotune"')


def test_a_compiled_run_saves_plain_weights_and_matches_eager(tmp_path, monkeypatch, trained_toy):
    monkeypatch.setenv(accel.COMPILE_BACKEND_ENV, "eager")  # dynamo's tracing without a C++ compiler
    # the eager run: trained_toy (conftest), the same recipe under another name, trained uncompiled on the CPU
    eager = trained_toy
    assert not compile_default(eager.recipe.run.compile, eager.device)
    compiled = build(write_recipe(tmp_path, name="compiled", **TRAINED_TOY), "run.compile=true")
    _, log = quiet_train(compiled)
    assert any("torch.compile" in m for m in log)
    state = checkpoint(compiled.run_dir, 2)
    assert state["model"].keys() == eager.model.state_dict().keys()  # no _orig_mod. prefixes
    for key, value in eager.model.state_dict().items():
        assert torch.allclose(state["model"][key], value, atol=1e-6), key
        assert torch.allclose(state["ema"][key], eager.ema.state_dict()[key], atol=1e-6), key


def test_a_resumed_optimiser_state_takes_the_channels_last_layout_of_its_parameters():
    from gentool.engine.optim import align_state_layout

    conv = nn.Conv2d(3, 4, 3)
    opt = torch.optim.AdamW(conv.parameters(), lr=0.1)
    conv(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    saved = {k: v.clone() for k, v in opt.state[conv.weight].items()}
    conv.to(memory_format=torch.channels_last)  # what prepare() does on CUDA, after a resume
    align_state_layout(opt)
    state = opt.state[conv.weight]
    assert state["exp_avg"].stride() == state["exp_avg_sq"].stride() == conv.weight.stride()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
