"""The objective kind: the built-in ``ddpm`` is today's L_simple, bit for bit, and the keys that moved.

The reference training loop here re-implements Ho et al. Algorithm 1 on its
own (t by randint, eps by randn from the step generator, x_t from alpha-bar
computed here, the squared error of eq. 14) and must give the engine's losses
and weights exactly, for the same seed.
"""

from __future__ import annotations

import json

import pytest
import torch

import gentool
from _tiny import build, quiet_train, write_recipe
from gentool.engine import distributed, rng
from gentool.engine.data import train_batches
from gentool.engine.optim import clip_gradients, lr_at, make_optimizer, set_lr
from gentool.recipe import RecipeError, load_recipe
from gentool.testing import tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STEPS = 3
#: no EMA, every step logged: the losses and the online weights alone (warm-up and clipping as usual)
OVERRIDES = ("train.ema_decay=0.0", "train.log_every=1")


def reference_training(run, steps: int) -> list[float]:
    """Algorithm 1 written out: the per-step losses; ``run.model`` is trained in place."""
    tr, seed, T = run.recipe.train, run.recipe.run.seed, run.diffusion.num_timesteps
    betas = run.diffusion.betas.double().cpu()
    abar = torch.cumprod(1.0 - betas, 0)  # alpha-bar_t (eq. 4), 0-based t
    sqrt_abar, sqrt_1m_abar = abar.sqrt().float(), (1.0 - abar).sqrt().float()
    generator = torch.Generator()
    rng.seed_all(rng.rank_seed(seed, 0), generator)  # as a fresh engine run seeds itself
    batches, _ = train_batches(run, distributed.Dist(), lambda m: None)
    optimizer = make_optimizer(run.model, lr=tr.lr, weight_decay=tr.weight_decay, device=run.device)
    losses = []
    run.model.train()
    for step in range(steps):
        x0, labels = next(batches)
        labels = labels if run.model.conditioner is not None else None
        set_lr(optimizer, lr_at(step, tr.lr, tr.warmup_steps))
        optimizer.zero_grad(set_to_none=True)
        t = torch.randint(0, T, (x0.shape[0],), generator=generator)  # line 3: t ~ U{1..T}, 0-based here
        eps = torch.randn(x0.shape, generator=generator)  # line 4: eps ~ N(0, I)
        x_t = sqrt_abar[t].view(-1, 1, 1, 1) * x0 + sqrt_1m_abar[t].view(-1, 1, 1, 1) * eps
        per_example = (eps - run.model(x_t, t, labels).float()).square().flatten(1).mean(1)  # line 5, eq. 14
        loss = per_example.mean()  # the batch's Monte Carlo estimate of the expectation
        loss.backward()
        clip_gradients(run.model.parameters(), tr.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_ddpm_objective_trains_bit_identically_to_algorithm_1(tmp_path):
    recipe = write_recipe(tmp_path, steps=STEPS, checkpoint_every=STEPS, class_cond=True)
    engine = build(recipe, *OVERRIDES)
    assert engine.recipe.objective.name == "ddpm" and engine.objective.prediction == "eps"
    quiet_train(engine)
    lines = [json.loads(s) for s in (engine.run_dir / "metrics.jsonl").read_text().splitlines()]
    engine_losses = [r["loss"] for r in lines if "loss" in r]

    reference = build(recipe, *OVERRIDES)  # the same seed: the same initial weights
    losses = reference_training(reference, STEPS)
    assert engine_losses == losses  # exactly: float32 values written as JSON round-trip
    for (name, a), (_, b) in zip(engine.model.state_dict().items(), reference.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_train_loss_and_denoiser_prediction_move_to_objective(tmp_path):
    data = tiny_recipe(tmp_path)
    data["train"]["loss"] = "l1"
    data["denoiser"]["prediction"] = "v"
    recipe = load_recipe(data=data)
    assert recipe.objective.name == "ddpm"
    assert {k: recipe.objective.options[k] for k in ("prediction", "loss")} == {"prediction": "v", "loss": "l1"}
    assert "loss" not in recipe.to_dict()["train"] and "prediction" not in recipe.to_dict()["denoiser"]
    assert any("train.loss has moved to [objective] loss" in n for n in recipe.notes)
    run = gentool.build(recipe, device="cpu")
    assert run.model.prediction == "v" and run.sampling_model.prediction == "v"  # samplers read it here


def test_a_moved_key_contradicting_the_objective_is_one_clear_error(tmp_path):
    data = tiny_recipe(tmp_path)
    data["train"]["loss"] = "l1"
    data["objective"] = {"loss": "l2"}
    with pytest.raises(RecipeError, match=r"train\.loss: has moved to \[objective\] loss, which says 'l2'"):
        load_recipe(data=data)


def test_an_old_run_directory_loads_and_resumes_without_a_mismatch(tmp_path):
    """A run trained before [objective]: its resolved recipe and checkpoint key hold train.loss and
    denoiser.prediction; it loads and resumes as the same recipe."""
    recipe = write_recipe(tmp_path, steps=2, checkpoint_every=2)
    run = build(recipe)
    quiet_train(run)
    run_dir = run.run_dir
    # rewrite the run directory as the older gentool wrote it
    resolved = run_dir / "recipe.resolved.toml"
    text = resolved.read_text()
    head, _, tail = text.partition("[objective]")
    tail = tail.split("\n[", 1)[1]
    old = (head + "[" + tail).replace("[train]\n", '[train]\nloss = "l2"\n').replace(
        "[denoiser]\n", '[denoiser]\nprediction = "eps"\n')
    resolved.write_text(old)
    ckpt_path = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    state = torch.load(ckpt_path, weights_only=False)
    key = json.loads(state["recipe_key"])
    key.pop("objective")
    key["train"]["loss"], key["denoiser"]["prediction"] = "l2", "eps"
    state["recipe_key"], state["recipe_fingerprint"] = json.dumps(key, sort_keys=True), "old"
    state["recipe"] = old
    torch.save(state, ckpt_path)
    (ckpt_path.parent / (ckpt_path.name + ".sha256")).unlink(missing_ok=True)

    loaded = gentool.load_run(run_dir, device="cpu")
    assert loaded.step == 2 and loaded.recipe.objective.options["loss"] == "l2"
    more = build(resolved, "train.steps=3")
    result, messages = quiet_train(more)
    assert result.step == 3 and result.resumed_from == 2, messages


def test_check_says_where_a_moved_key_went(tmp_path):
    from typer.testing import CliRunner

    from gentool.cli import app

    recipe = write_recipe(tmp_path, train='loss = "l1"')
    result = CliRunner().invoke(app, ["check", str(recipe), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "note: " in result.output and "train.loss has moved to [objective] loss; read as objective.loss = 'l1'" \
        in " ".join(result.output.split())
