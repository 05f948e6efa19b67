"""What a training checkpoint holds, and putting it back.

A checkpoint holds the model, its EMA, the optimiser, the step (which is also
the data position: the data order is a function of (seed, step), see
:mod:`gentool.engine.data`), every rank's RNG states, the best evaluation so
far, the resolved recipe and the part of it that defines the training
trajectory (the "recipe key"), so that a run directory is never resumed by a
different recipe by accident.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

import gentool
from gentool.engine import rng
from gentool.parameterisation import describe
from gentool.options import check_options
from gentool.recipe import MOVED_KEYS, Recipe

FORMAT = 1
# [train] keys that change bookkeeping, not the trajectory: a resumed run may change them freely
# (grad_accum splits the same global batch differently; steps extends or shortens the run).
BOOKKEEPING = frozenset({
    "steps", "checkpoint_every", "keep_last", "milestone_every", "sample_every", "sample_n", "log_every",
    "preview_every", "preview_steps",
    "test_loss_every", "test_loss_timesteps", "test_loss_batches", "num_workers", "on_nan", "grad_accum",
    "data_on_device",  # where batches are gathered: the same order and the same flip distribution
    "phema_every",  # when post-hoc EMA snapshots are written, not what is tracked
})
# [data] keys that say where the data lives, not what it is
DATA_LOCATION = frozenset({"root", "download"})
# [autoencoder] keys that say where its weights live (a resumed run checks the weights themselves: their fingerprint)
AUTOENCODER_LOCATION = frozenset({"path", "download"})


def recipe_key(recipe: Recipe) -> dict[str, Any]:
    """The recipe parts that define the model and its training trajectory."""
    d = recipe.to_dict()
    key: dict[str, Any] = {"seed": d["run"]["seed"]}
    for section in ("data", "autoencoder", "process", "schedule", "denoiser", "conditioner", "objective"):
        if section in d:
            key[section] = d[section]
    if "data" in key:
        key["data"] = {k: v for k, v in key["data"].items() if k not in DATA_LOCATION}
    if "autoencoder" in key:
        key["autoencoder"] = {k: v for k, v in key["autoencoder"].items() if k not in AUTOENCODER_LOCATION}
    key["train"] = {k: v for k, v in d["train"].items() if k not in BOOKKEEPING}
    # post-hoc EMA on is part of the key (its profiles start at step 0, so it cannot be switched on by resuming);
    # off, the key is that of the runs trained before it existed, which resume as they did
    if not key["train"].get("phema_sigma_rels"):
        key["train"].pop("phema_sigma_rels", None)
    return json.loads(json.dumps(key, default=str))


def fingerprint(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def recipe_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``["train.lr: 0.0002 -> 0.001", ...]``: where two recipe keys differ."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "(absent)"), new.get(k, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += recipe_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def mismatch(state: dict[str, Any], key: dict[str, Any]) -> list[str]:
    """How the recipe that wrote ``state`` differs from ``key`` (empty: the same)."""
    if state.get("recipe_fingerprint") == fingerprint(key):
        return []
    old = state.get("recipe_key")
    if not isinstance(old, str):
        return ["the checkpoint was written by an older gentool without a recipe key"]
    old_key = json.loads(old)
    migrated = old_key
    if "objective" not in migrated:  # written before [objective]: the same recipe if it migrates to this one
        migrated = _with_objective(migrated)
    if "process" not in migrated:  # written before [process]: the discrete chain, the default then
        migrated = _with_default(migrated, "process")
    if "autoencoder" not in migrated:  # written before [autoencoder]: pixel space, the default
        migrated = _with_default(migrated, "autoencoder")
    if migrated is not old_key:
        return recipe_diff(migrated, key)
    return recipe_diff(old_key, key) or ["the recipe fingerprints differ"]


def _with_default(old: dict[str, Any], section: str) -> dict[str, Any]:
    """A recipe key from before the ``[section]`` table: the default component of its kind, with its defaults."""
    from gentool.kinds import BY_TABLE
    from gentool.plugins import registry

    kind = BY_TABLE[section]
    name = registry().default(kind.name)
    try:
        options = check_options(registry().get(kind.name, name).factory, {}, reserved=kind.reserved + kind.supplied)
    except Exception:  # noqa: BLE001 - no such default any more: show the difference
        options = {}
    return {**old, section: json.loads(json.dumps({"name": name, **options}, default=str))}


def _with_objective(old: dict[str, Any]) -> dict[str, Any]:
    """A recipe key from before ``[objective]``: its ``train.loss`` and ``denoiser.prediction`` were the
    built-in L_simple's options, so they become that objective's table (its other options at their defaults)."""
    from gentool.plugins import registry

    old = json.loads(json.dumps(old))
    moved = {}
    for (table, key), (_, new_key) in MOVED_KEYS.items():
        if key in old.get(table, {}):
            moved[new_key] = old[table].pop(key)
    name = registry().default("objective")  # what a recipe without [objective] gets
    try:
        options = check_options(registry().get("objective", name).factory, moved)
    except Exception:  # noqa: BLE001 - the objective is gone or refuses them: show the difference
        options = moved
    old["objective"] = json.loads(json.dumps({"name": name, **options}, default=str))
    return old


def training_state(run, optimizer: torch.optim.Optimizer, rngs: list[dict[str, Any]],
                   key: dict[str, Any], best: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full checkpoint of ``run`` at ``run.step``: model, EMA, optimiser, RNGs, recipe."""
    tr = run.recipe.train
    return {
        "format": FORMAT,
        "step": run.step,
        "model": run.model.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "rng": rngs,  # one entry per rank
        "data": {"step": run.step, "seed": run.recipe.run.seed, "batch_size": tr.batch_size, "world": len(rngs)},
        "best": best,
        "recipe": run.recipe.dumps(),
        "recipe_key": json.dumps(key, sort_keys=True),
        "recipe_fingerprint": fingerprint(key),
        "latent": run.space.record(),  # the scale factor and the autoencoder's weights: what decoding needs
        "versions": {"gentool": str(gentool.__version__), "torch": str(torch.__version__)},
        "parameterisation": describe(run.model.parameterisation),  # what the network outputs, checked on load
        "threads": torch.get_num_threads(),  # a resumed run takes the same count: the same float sums, exact
        **objective_state(run.objective),
    }


def objective_state(objective: Any) -> dict[str, Any]:
    """``{"objective": objective.state_dict()}`` for an objective that keeps state between steps (a
    distillation's teacher of the current round), else nothing (checkpoints stay as they were)."""
    fn = getattr(objective, "state_dict", None)
    return {"objective": fn()} if callable(fn) else {}


def load_training_state(run, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                        generator: torch.Generator, rank: int, world: int, source: Any = "the checkpoint") -> list[str]:
    """Put a checkpoint back into ``run`` and ``optimizer``; returns notes for the log."""
    from gentool.engine.checkpoint import load_weights, restore_latent

    load_weights(run, state["model"], state.get("ema"), source)
    restore_latent(run, state, source, strict=True)
    flags = [(g.get("fused"), g.get("foreach")) for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, (fused, foreach) in zip(optimizer.param_groups, flags):  # this machine's choice, not the saver's
        group["fused"], group["foreach"] = fused, foreach
    run.step = int(state["step"])
    load = getattr(run.objective, "load_state_dict", None)
    if callable(load) and state.get("objective") is not None:
        load(state["objective"])
    return _restore_rngs(state["rng"], generator, run, rank, world)


def _restore_rngs(rngs: Any, generator: torch.Generator, run, rank: int, world: int) -> list[str]:
    rngs = [rngs] if isinstance(rngs, dict) else list(rngs)
    if len(rngs) == world:
        return rng.restore(rngs[rank], generator, run.device)
    # a different number of processes: the run goes on, but not bit-identically
    generator.manual_seed(rng.rank_seed(run.recipe.run.seed, rank) + run.step)
    torch.manual_seed(rng.rank_seed(run.recipe.run.seed, rank) + run.step)
    return [f"the checkpoint was written by {len(rngs)} process(es), this run has {world}: "
            "the data order is kept but random draws restart from a fresh seed"]
