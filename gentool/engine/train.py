"""The training loop: the recipe's objective (default L_simple, Ho et al. eq. 14) with AdamW, EMA and exact resume.

One optimiser step:

1. the step's global batch (a function of (seed, step); this rank's slice of
   it); the objective draws t and the noise for all of it from the step
   generator (``ddpm``: t ~ U{0..T-1}, eps ~ N(0, I), Algorithm 1); split into
   ``train.grad_accum`` micro-batches, each's mean loss / k is backpropagated;
2. gradients all-reduced by DDP (on the last micro-batch), clipped;
3. a non-finite loss or gradient stops the run or skips the step (nonfinite.py);
4. AdamW with the warm-up learning rate, then the EMA update (and, with ``[train]
   phema_sigma_rels``, the power-function EMAs of post-hoc EMA, :mod:`gentool.engine.phema`).

Around it: metrics every ``log_every`` steps (sent to the ``[run] loggers``), checkpoints every
``checkpoint_every`` (and at the end), sample grids, the test loss,
evaluation, and SIGINT/SIGTERM saving a checkpoint before stopping.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from gentool.atomic import atomic_write_text
from gentool.engine import checkpoint as ckpt
from gentool.engine import distributed, rng, state
from gentool.engine.accel import Prepared, prepare, uses_bf16  # noqa: F401 - uses_bf16 re-exported
from gentool.engine.data import train_batches
from gentool.engine.ema import ema_decay, ema_update
from gentool.engine.lock import RunLock
from gentool.engine.loggers import Loggers
from gentool.engine.loss_scale import LossScaler
from gentool.engine.metrics import METRICS, StepStats  # noqa: F401 - METRICS re-exported
from gentool.engine.nonfinite import NonFiniteGuard, NonFiniteLossError, deferred_checks
from gentool.engine.optim import (align_state_layout, clip_gradients, is_finite, lr_at, make_optimizer, resume_note,
                                  set_lr)
from gentool.engine.periodic import Periodic
from gentool.engine.phema import PowerEMA
from gentool.engine.phema_files import write_snapshots
from gentool.engine.progress_bar import TrainProgress
from gentool.engine.signals import StopRequest
from gentool.engine.step import objective_loss
from gentool.errors import GentoolError
from gentool.recipe import RecipeError
from gentool.run import RESOLVED_RECIPE, Run

LATENT_RECORD = "latent.json"  # a latent run's autoencoder fingerprint and scale factor
PLOT_INTERVAL_S = 30.0  # plots are redrawn at checkpoints at most this often (and always at the end)

__all__ = ["NonFiniteLossError", "RecipeMismatchError", "RunDirectoryError", "TrainResult", "train"]


class RecipeMismatchError(GentoolError, RuntimeError):
    """A run directory written by a different recipe."""


class RunDirectoryError(GentoolError, ValueError):
    """A run directory that cannot be used as asked (e.g. --no-resume over old checkpoints)."""


@dataclass
class TrainResult:
    step: int
    loss: float
    checkpoint: Path | None
    resumed_from: int
    interrupted: bool = False
    signal: int = 0  # the signal that interrupted the run (SIGINT 2, SIGTERM 15)


def train(run: Run, *, resume: bool = True, force: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, lock: RunLock | None = None) -> TrainResult:
    """Train ``run.model`` per the recipe's ``[train]`` table, resuming if possible.

    Writes ``recipe.resolved.toml``, ``metrics.jsonl``, ``checkpoints/``,
    ``plots/`` and ``samples/`` into the run directory (rank 0 only). With
    ``resume`` it continues from the newest readable checkpoint; ``force``
    resumes one written by a different recipe (or, without ``resume``, moves
    old checkpoints aside). Under ``torchrun`` it trains with DDP.
    Rank 0 holds the run directory's lock (``lock``, else its own, released on
    return) from before it reads the directory: a second writer stops at once.
    """
    dist_info = distributed.setup(run.device)
    trainer = Trainer(run, dist_info, log if dist_info.main else (lambda message: None))
    own = lock is None
    trainer.lock = (RunLock(run.run_dir) if own else lock) if dist_info.main else None
    try:
        if trainer.lock is not None and run.run_dir.is_dir():
            trainer.lock.acquire()  # a missing directory is locked once fit() makes it
        trainer.restore(resume=resume, force=force)
        return trainer.fit(progress=progress and dist_info.main)
    finally:
        trainer.close()
        if own and trainer.lock is not None:
            trainer.lock.release()
        distributed.teardown()


def trained_for(st: dict[str, Any]) -> int:
    """The ``train.steps`` of the recipe that wrote checkpoint ``st`` (what its learning-rate schedule aimed at)."""
    import tomllib

    try:
        return int(tomllib.loads(st.get("recipe") or "").get("train", {}).get("steps", 0))
    except (tomllib.TOMLDecodeError, TypeError, ValueError):
        return 0


class Trainer:
    """The state of one training session: optimiser, step generator, logs."""

    def __init__(self, run: Run, dist_info: distributed.Dist, log: Callable[[str], None]) -> None:
        self.run, self.dist, self.log, self.tr = run, dist_info, log, run.recipe.train
        if self.tr.batch_size % (dist_info.world * self.tr.grad_accum):
            raise RecipeError(run.recipe.source, "train.batch_size", f"{self.tr.batch_size} must split evenly over "
                              f"{dist_info.world} process(es) times train.grad_accum ({self.tr.grad_accum}) "
                              "micro-batches", self.tr.batch_size)
        self.key = state.recipe_key(run.recipe)
        self.optimizer = make_optimizer(run.model, lr=self.tr.lr, weight_decay=self.tr.weight_decay,
                                        device=run.device)
        self.generator = torch.Generator(device=run.device)
        self.scaler = LossScaler(self.tr.fp16_on(run.device), run.device)  # fp16: dynamic loss scaling
        self.start, self.best, self.last_saved = 0, None, -1
        self.loss_value, self._plotted = math.nan, -math.inf
        self.loggers: Loggers | None = None
        self._check_labels = False  # loader batches' labels are checked on the host, each step
        self._found: tuple[Path, dict[str, Any]] | None = None
        # post-hoc EMA: rank 0 tracks it (every rank holds the same weights)
        self.phema = PowerEMA(run.model, self.tr.phema_sigma_rels) if self.tr.phema_sigma_rels and dist_info.main \
            else None
        self.lock: RunLock | None = None  # the run directory's lock (rank 0), set by train()

    # -- resuming -----------------------------------------------------------
    def restore(self, *, resume: bool, force: bool) -> None:
        """Load the checkpoint to resume from (chosen by rank 0), or start afresh."""
        decision = self._choose(resume, force) if self.dist.main else None
        kind, value = distributed.broadcast(decision)
        if kind == "error":
            raise RunDirectoryError(value)
        if value is None:
            # a fresh run draws the same numbers whatever this process did before (and differs per rank)
            rng.seed_all(rng.rank_seed(self.run.recipe.run.seed, self.dist.rank), self.generator)
            where = self._threads(None)
            if self._start_objective(fresh=True) and self.phema is not None:  # its profiles start from these weights
                self.phema = PowerEMA(self.run.model, self.tr.phema_sigma_rels)
            self.log(f"starting a new run in {self.run.run_dir} ({where})")
            return
        path = Path(value)
        st = self._found[1] if self._found is not None else ckpt.load_checkpoint(path)
        where = self._threads(st.get("threads"))
        self._found = None
        diff = state.mismatch(st, self.key)
        if diff and not force:
            raise RecipeMismatchError(
                f"{self.run.run_dir} holds checkpoints of a different recipe ({'; '.join(diff[:6])}); use the "
                "recipe that wrote them, another run name (--set run.name=...), or --force to resume anyway")
        if diff:
            self.log(f"warning: --force: resuming checkpoints of a different recipe ({'; '.join(diff[:6])})")
        for note in state.load_training_state(self.run, self.optimizer, st, self.generator,
                                              self.dist.rank, self.dist.world, source=path):
            self.log(f"note: {note}")
        self.scaler.load_state_dict(st.get("grad_scaler") or {})
        self._restore_phema(st.get("phema"))
        self.best, self.start, self.last_saved = st.get("best"), self.run.step, self.run.step
        self.run.checkpoint = path
        self._start_objective(fresh=False)
        self.log(f"resuming from {path} (step {self.start} of {self.tr.steps}; {where})")
        note = resume_note(self.start, trained_for(st), self.tr.steps, self.tr.lr, self.tr.warmup_steps,
                           self.tr.lr_schedule)
        if note is not None:
            self.log(f"note: {note}")

    def _start_objective(self, *, fresh: bool) -> bool:
        """The objective's optional ``start(run, fresh=...)``, before the session's first step (a distillation
        loads its teacher there, and a fresh student takes the teacher's weights); True when it has one."""
        start = getattr(self.run.objective, "start", None)
        if not callable(start):
            return False
        start(self.run, fresh=fresh)
        return True

    def _restore_phema(self, saved: dict[str, Any] | None) -> None:
        if self.phema is None:
            return
        try:
            if saved is None:
                raise ValueError("the checkpoint holds no post-hoc EMA")
            self.phema.load_state_dict(saved)
        except ValueError as exc:  # only with --force: the recipe key includes phema_sigma_rels
            self.phema = PowerEMA(self.run.model, self.tr.phema_sigma_rels)
            self.log(f"warning: {exc}: the post-hoc EMA starts from the weights of step {self.run.step}, so its "
                     "snapshots are not power-function averages from step 0 and reconstructions from them are off")

    def _threads(self, recorded: Any) -> str:
        """Set the training threads (:func:`gentool.threads.training_threads`: every core of an idle machine for a
        new run, the recorded count for a resumed one) and say ``cpu, 2 CPU threads (...)`` for the first line."""
        from gentool.threads import training_threads

        if self.run.device.type == "cpu":
            count, why = training_threads(self.run.recipe.run.threads,
                                          recorded if isinstance(recorded, int) else None)
            if count is not None and count != torch.get_num_threads():
                torch.set_num_threads(count)
        else:
            why = "the GPU does the work"
        n = torch.get_num_threads()
        return f"{self.run.device}, {n} CPU thread{'s' if n != 1 else ''} ({why})"

    def _choose(self, resume: bool, force: bool) -> tuple[str, str | None]:
        run_dir = self.run.run_dir
        ckpt.clean_partial(run_dir)
        existing = ckpt.list_checkpoints(run_dir)
        if not resume:
            if existing and not force:
                return ("error", f"{run_dir} already holds checkpoints (up to step {ckpt.step_of(existing[-1])}); "
                        "--no-resume would mix two runs there. Resume instead, use another run name "
                        "(--set run.name=...), or pass --force to move the old checkpoints aside")
            if existing:
                self.log(f"moved the old checkpoints to {ckpt.archive(run_dir)}")
            return ("path", None)
        self._found = ckpt.latest_good(run_dir, on_bad=lambda m: self.log(f"warning: {m}"), quarantine_bad=True)
        if self._found is None:
            if existing:
                self.log(f"warning: no readable checkpoint in {run_dir / ckpt.CHECKPOINT_DIR}; starting from step 0")
            return ("path", None)
        return ("path", str(self._found[0]))

    # -- the loop ------------------------------------------------------------
    def fit(self, *, progress: bool) -> TrainResult:
        run, tr = self.run, self.tr
        if run.step < tr.steps:  # the data first: a download that fails leaves no empty run directory behind
            batches, self._check_labels = train_batches(run, self.dist, self.log)
        if self.dist.main:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            if self.lock is not None:
                self.lock.acquire()
            resolved = run.run_dir / RESOLVED_RECIPE
            if run.step < tr.steps or not resolved.exists():  # a no-op run keeps the recipe its checkpoints match
                atomic_write_text(resolved, run.recipe.dumps())
            if run.step < tr.steps and not run.space.identity:  # what decoding needs, for people (checkpoints hold it)
                record = {**run.space.record(), "table": run.recipe.autoencoder.to_dict(),
                          "latent_shape": list(run.latent_shape), "image_shape": list(run.image_shape)}
                atomic_write_text(run.run_dir / LATENT_RECORD, json.dumps(record, indent=2) + "\n")
        if run.step >= tr.steps:
            self.log(f"already trained to step {run.step} (train.steps = {tr.steps}); nothing to do")
            return self._result()
        prep = prepare(run, self.dist, self.log)
        align_state_layout(self.optimizer)  # a resumed state meets channels-last parameters
        self.loggers = Loggers(run, run.step, self.log) if self.dist.main else None
        for note in run.recipe.notes:
            self.log(f"note: {note}")
        if self.loggers is not None:
            self.loggers.text(run.step, "recipe", run.recipe.dumps())
        stats = StepStats(run.device)
        fused = bool(self.optimizer.defaults.get("fused"))
        deferred = deferred_checks(run.device) and fused and not self.scaler.enabled  # fp16: the scaler checks
        guard = NonFiniteGuard(tr.on_nan, deferred, run.device)
        periodic = Periodic(run, self.log, self.best, plot=self._plot)
        run.model.train()
        self._plotted = time.monotonic()
        with StopRequest() as stop, TrainProgress(tr.steps, run.step, enabled=progress, log=self.log) as bar:
            while run.step < tr.steps:
                self._step(next(batches), prep, stats, guard)
                self._after_step(stats, guard, periodic, bar)
                if distributed.any_flag(stop.requested):
                    return self._interrupted(stop, periodic, guard)
        self._plot()
        return self._result()

    def _step(self, batch, prep: Prepared, stats: StepStats, guard: NonFiniteGuard) -> None:
        run, tr = self.run, self.tr
        x0, labels = batch
        x0 = prep.to_device(x0, run.device)
        if run.model.conditioner is None:
            labels = None
        else:
            if self._check_labels:
                run.model.check_labels(labels)  # still on the host: no device sync
            labels = labels.to(run.device, non_blocking=True)
        set_lr(self.optimizer, lr_at(run.step, tr.lr, tr.warmup_steps, tr.lr_schedule, tr.steps))
        self.optimizer.zero_grad(set_to_none=True)
        loss, extras = self._accumulate(x0, labels, prep)
        self.scaler.unscale_(self.optimizer)  # fp16: the true gradients before clipping
        grad_norm = clip_gradients(run.model.parameters(), tr.grad_clip)
        overflow = self.scaler.overflow(self.optimizer, loss) & torch.isfinite(loss)  # fp16: the scaler's to skip
        bad = distributed.any_device_(~is_finite(loss, grad_norm) & ~overflow)  # the same verdict on every rank
        self._update(bad, guard, loss)
        if self.phema is not None:  # a skipped step left the weights as they were: taking them in keeps eq. 1 exact
            self.phema.update(run.step + 1)
        stats.add(loss, grad_norm, bad | overflow, extras)
        run.step += 1

    def _accumulate(self, x0, labels, prep: Prepared) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum of the micro-batch losses / k, each backpropagated (gradient accumulation), and the
        objective's extra scalars averaged over the micro-batches.

        t and the noise are drawn for the whole batch first, so k only changes how
        the same sum is split: the trajectory does not depend on train.grad_accum.
        """
        k, run, objective = self.tr.grad_accum, self.run, self.run.objective
        t, noise = objective.draw(run.process, x0, self.generator)
        ls = labels.chunk(k) if labels is not None else [None] * k
        parts = list(zip(x0.chunk(k), t.chunk(k), noise.chunk(k), ls))
        total = torch.zeros((), device=run.device)
        extras: dict[str, torch.Tensor] = {}
        for i, (xb, tb, nb, lb) in enumerate(parts):
            with prep.no_sync(sync=i == k - 1):
                loss, more = objective_loss(objective, prep.net, run.process, xb, lb, None, autocast=prep.autocast,
                                            t=tb, noise=nb)
                loss = loss / k
                self.scaler.scale(loss).backward()
            total += loss.detach()
            for name, value in more.items():
                extras[name] = extras.get(name, 0) + value.detach().float().mean() / k
        return total, extras

    def _update(self, bad: torch.Tensor, guard: NonFiniteGuard, loss: torch.Tensor) -> None:
        """AdamW and EMA, unless the step is non-finite (checked now, or gated on the device)."""
        run, step = self.run, self.run.step + 1
        decay = ema_decay(self.tr.ema_decay, run.step, self.tr.ema_warmup)
        if guard.deferred:
            self.optimizer.found_inf = bad.float()  # the fused kernel skips the update (and its step count)
            self.optimizer.step()
            if run.ema is not None:
                ema_update(run.ema, run.model, decay, gate=~bad)
            guard.record(bad, step)
            return
        if bool(bad):
            if self.tr.on_nan == "stop":
                raise guard.error(step, run.checkpoint)
            self.log(f"skipping step {step}: non-finite loss ({float(loss):.4g}) or gradient")
            self.scaler.update()
            return
        if not self.scaler.enabled:
            self.optimizer.step()
        elif self.scaler.step(self.optimizer):  # fp16: gradients past float16's range skip the step
            return
        if run.ema is not None:
            ema_update(run.ema, run.model, decay)

    def _after_step(self, stats: StepStats, guard: NonFiniteGuard, periodic: Periodic, bar) -> None:
        run, tr = self.run, self.tr
        step, last = run.step, run.step == tr.steps
        log_due = step % tr.log_every == 0 or last
        save_due = step % tr.checkpoint_every == 0 or last or periodic.keep_best_due(step)
        if guard.deferred and (log_due or save_due):
            first_bad = guard.pending()
            if first_bad is not None and tr.on_nan == "stop":
                raise guard.error(first_bad, run.checkpoint, detected_at=step)
        if log_due:
            self._log_line(stats, bar)
        improved = periodic.after_step(step, self._write, self._image) if self.dist.main else False
        if self.phema is not None and (step % (tr.phema_every or tr.checkpoint_every) == 0 or last):
            write_snapshots(self.phema, run.run_dir)
        if save_due:
            path = self.save(periodic.best.record)
            if improved and path is not None:
                ckpt.atomic_copy(path, ckpt.best_path(run.run_dir))
                rec = periodic.best.record
                self.log(f"new best {rec['metric']} = {rec['value']:.4g}: copied step {step} to "
                         f"{ckpt.best_path(run.run_dir)}")
        bar.advance(step)

    def _log_line(self, stats: StepStats, bar) -> None:
        rec = stats.flush(self.tr.batch_size)
        self.loss_value = rec["loss"]
        record = {"step": self.run.step, "loss": rec["loss"], "lr": self.optimizer.param_groups[0]["lr"],
                  "grad_norm": rec["grad_norm"], "skipped": rec["skipped"],
                  "steps_per_s": rec["steps_per_s"], "img_per_s": rec["img_per_s"]}
        record.update({k: v for k, v in rec.items() if k not in record})  # the objective's extra scalars
        if self.scaler.enabled:
            record["loss_scale"] = self.scaler.get_scale()
        self._write(record)
        bar.show(record)
        if rec["skipped"] and self.optimizer.defaults.get("fused") and deferred_checks(self.run.device):
            self.log(f"skipped {rec['skipped']} step(s) with a non-finite loss or gradient before step {self.run.step}")

    def _write(self, record: dict[str, Any]) -> None:
        if self.loggers is not None:
            self.loggers.write(record)

    def _image(self, step: int, name: str, image: torch.Tensor) -> None:
        if self.loggers is not None:
            self.loggers.image(step, name, image)

    # -- saving ---------------------------------------------------------------
    def save(self, best: dict[str, Any] | None = None) -> Path | None:
        """Write a checkpoint of the current step (rank 0); every rank must call it (RNG states)."""
        rngs = distributed.all_gather(rng.capture(self.generator, self.run.device))
        self.last_saved = self.run.step
        if not self.dist.main:
            return None
        run, tr = self.run, self.tr
        st = state.training_state(run, self.optimizer, rngs, self.key, best)
        if self.scaler.enabled:
            st["grad_scaler"] = self.scaler.state_dict()
        if self.phema is not None:
            st["phema"] = self.phema.state_dict()
        path = ckpt.save_checkpoint(st, ckpt.checkpoint_path(run.run_dir, run.step))
        ckpt.prune(run.run_dir, tr.keep_last, tr.milestone_every)
        run.checkpoint = path
        if time.monotonic() - self._plotted > PLOT_INTERVAL_S:  # frequent checkpoints: plot now and then
            self._plot()
        return path

    def _interrupted(self, stop: StopRequest, periodic: Periodic, guard: NonFiniteGuard) -> TrainResult:
        first_bad = guard.pending() if guard.deferred else None
        if first_bad is not None and self.tr.on_nan == "stop":
            raise guard.error(first_bad, self.run.checkpoint, detected_at=self.run.step)
        if self.last_saved != self.run.step:
            self.save(periodic.best.record)
        signum = stop.signum or 15  # another rank was signalled
        from gentool.engine.signals import name

        self.log(f"interrupted by {name(signum)}: saved {self.run.checkpoint} at step {self.run.step}; "
                 "run the same command again to resume")
        return self._result(interrupted=True, signal=signum)

    def _plot(self) -> None:
        if not self.dist.main:
            return
        self._plotted = time.monotonic()
        try:
            from gentool.engine.plots import plot_metrics

            plot_metrics(self.run.run_dir)
        except Exception as exc:  # noqa: BLE001 - a plot must never stop training
            self.log(f"warning: could not draw the plots: {type(exc).__name__}: {exc}")

    def _result(self, **extra) -> TrainResult:
        return TrainResult(self.run.step, self.loss_value, self.run.checkpoint, self.start, **extra)

    def close(self) -> None:
        if self.loggers is not None:
            self.loggers.close()
            self.loggers = None
        self.run.model.eval()
