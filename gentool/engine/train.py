"""The training loop: L_simple (Ho et al. eq. 14, Algorithm 1) with AdamW and EMA."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gentool.engine import checkpoint as ckpt
from gentool.engine.data import step_loader
from gentool.engine.ema import ema_decay, ema_update
from gentool.engine.step import diffusion_loss
from gentool.run import RESOLVED_RECIPE, Run


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


class RecipeMismatchError(RuntimeError):
    """A run directory written by a different recipe."""


@dataclass
class TrainResult:
    step: int
    loss: float
    checkpoint: Path | None
    resumed_from: int
    interrupted: bool = False


def recipe_fingerprint(run: Run) -> str:
    """A hash of the recipe parts that define the model and its training (not steps)."""
    d = run.recipe.to_dict()
    keep = {k: d.get(k) for k in ("data", "schedule", "denoiser", "conditioner")}
    keep["train"] = {k: v for k, v in d["train"].items() if k not in ("steps", "checkpoint_every", "keep_last", "sample_every", "log_every", "num_workers", "test_loss_every")}
    keep["seed"] = d["run"]["seed"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_at(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


class _Stop:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def save(run: Run, optimizer: torch.optim.Optimizer, generator: torch.Generator, fingerprint: str) -> Path:
    state = {
        "step": run.step,
        "model": run.model.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(generator),
        "recipe_fingerprint": fingerprint,
    }
    path = ckpt.atomic_save(state, ckpt.checkpoint_path(run.run_dir, run.step))
    tr = run.recipe.train
    ckpt.prune(run.run_dir, tr.keep_last, tr.milestone_every)
    run.checkpoint = path
    return path


def make_optimizer(run: Run) -> torch.optim.Optimizer:
    tr = run.recipe.train
    kwargs: dict[str, Any] = {"lr": tr.lr, "weight_decay": tr.weight_decay}
    if run.device.type == "cuda":
        kwargs["fused"] = True
    return torch.optim.AdamW(run.model.parameters(), **kwargs)


def train(run: Run, *, resume: bool = True, force: bool = False, progress: bool = True, log=print) -> TrainResult:
    """Train ``run.model`` per the recipe's ``[train]`` table, resuming if possible.

    Writes ``recipe.resolved.toml``, ``metrics.jsonl`` and ``checkpoints/`` into
    the run directory. ``force`` resumes a run directory written by a different
    recipe.
    """
    tr, rc = run.recipe.train, run.recipe.run
    run_dir = run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = recipe_fingerprint(run)
    optimizer = make_optimizer(run)
    generator = torch.Generator(device=run.device).manual_seed(rc.seed)
    start = 0
    found = ckpt.latest_good(run_dir) if resume else None
    if found is not None:
        path, state = found
        if state.get("recipe_fingerprint") != fingerprint and not force:
            raise RecipeMismatchError(
                f"{run_dir} holds checkpoints of a different recipe; use another run name "
                "([run] name or --set run.name=...), delete the folder, or pass --force to resume anyway"
            )
        run.model.load_state_dict(state["model"])
        if run.ema is not None and state.get("ema") is not None:
            run.ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], generator)
        run.step = start = int(state["step"])
        run.checkpoint = path
        log(f"resuming from {path} (step {start})")
    (run_dir / RESOLVED_RECIPE).write_text(run.recipe.dumps(), encoding="utf-8")
    if start >= tr.steps:
        return TrainResult(run.step, float("nan"), run.checkpoint, start)

    dataset = run.dataset("train")
    batches = step_loader(dataset, tr.batch_size, seed=rc.seed, start_step=start, num_workers=tr.num_workers,
                          pin_memory=run.device.type == "cuda")
    model, diffusion = run.model, run.diffusion
    model.train()
    prediction = model.prediction
    use_bf16 = uses_bf16(run)
    metrics_file = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
    from gentool.progress import make_progress
    from rich.progress import TextColumn

    loss_value = float("nan")
    t0, seen = time.perf_counter(), 0
    interrupted = False
    with _Stop() as stop, metrics_file, make_progress(TextColumn("{task.fields[status]}")) as bar:
        task = bar.add_task("training", total=tr.steps, completed=start, status="", visible=progress)
        while run.step < tr.steps:
            x0, labels = next(batches)
            x0 = x0.to(run.device, non_blocking=True)
            labels = labels.to(run.device, non_blocking=True) if model.conditioner is not None else None
            for group in optimizer.param_groups:
                group["lr"] = lr_at(run.step, tr.lr, tr.warmup_steps)
            loss = diffusion_loss(model, diffusion, x0, labels, generator, prediction=prediction,
                                  loss=tr.loss, autocast=use_bf16)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip if tr.grad_clip > 0 else math.inf)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                if tr.on_nan == "stop":
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss_value}) at step {run.step + 1}; the last good checkpoint "
                        f"is {run.checkpoint or 'none'} (set train.on_nan = \"skip\" to skip such steps)"
                    )
                log(f"skipping step {run.step + 1}: non-finite loss {loss_value}")
                continue
            optimizer.step()
            if run.ema is not None:
                ema_update(run.ema, model, ema_decay(tr.ema_decay, run.step, tr.ema_warmup))
            run.step += 1
            seen += x0.shape[0]
            if run.step % tr.log_every == 0 or run.step == tr.steps:
                dt = time.perf_counter() - t0
                record = {"step": run.step, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                          "grad_norm": float(grad_norm), "img_per_s": seen / dt if dt > 0 else 0.0}
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                t0, seen = time.perf_counter(), 0
            bar.update(task, completed=run.step, status=f"loss {loss_value:.4f}")
            if run.step % tr.checkpoint_every == 0 or run.step == tr.steps:
                save(run, optimizer, generator, fingerprint)
            if stop.requested:
                interrupted = True
                if run.checkpoint is None or ckpt.checkpoint_path(run_dir, run.step) != run.checkpoint:
                    save(run, optimizer, generator, fingerprint)
                log(f"interrupted: saved {run.checkpoint} at step {run.step}")
                break
    model.eval()
    return TrainResult(run.step, loss_value, run.checkpoint, start, interrupted)


def uses_bf16(run: Run) -> bool:
    """bf16 autocast: asked for, or ``"auto"`` on CUDA."""
    precision = run.recipe.train.precision
    return precision == "bf16" or (precision == "auto" and run.device.type == "cuda")
