"""Work done every K steps on rank 0: sample grids, the test loss, evaluation and the best checkpoint.

Besides the grids every ``[train] sample_every`` steps, a cheap preview grid
(``[train] preview_steps`` sampler steps) is written every ``[train]
preview_every`` seconds of training, so that a slow run shows pictures from
its first minutes; the plots are redrawn with each. Every grid uses the same
start noise (and classes), so the grids of a run form a sequence, the newest
also at ``samples/latest.png``.

Each runs inside :func:`gentool.engine.rng.preserved`, so it never changes
what the training steps draw: a run with these hooks trains exactly the same
weights as one without them, and a resumed run stays bit-identical.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from gentool.engine import rng
from gentool.engine.plots import PLOTS
from gentool.engine.test_loss import test_losses, test_times

SAMPLES = "samples"
LATEST = "latest.png"  # in samples/: a copy of the newest grid
#: metrics where a higher value is better; every other metric is kept at its lowest
HIGHER_IS_BETTER = frozenset({"is", "isc", "inception_score", "precision", "recall", "f_score", "prc"})


def sample_grid(run, step: int, n: int, image: Callable[[torch.Tensor], None] | None = None,
                steps: int | None = None) -> Path:
    """``samples/step_XXXXXXXX.png`` (and a copy, ``samples/latest.png``): ``n`` images from the EMA model
    with a fixed seed, with ``steps`` steps of the recipe's sampler (``None``: the recipe's steps).

    ``image``, when given, also receives the grid as a ``[C, H, W]`` tensor in [0, 1] (for the loggers).
    """
    from gentool.atomic import atomic_write_bytes
    from gentool.images import grid_of, save_grid

    labels = torch.arange(n) % run.num_classes if run.num_classes else None
    # the plain path: a few images now and then need no compilation or CUDA graphs in the training process
    x = run.sample(n, labels=labels, steps=steps, generator=run.generator(), progress=False, fast=False)
    if image is not None:
        image(grid_of(x))
    path = save_grid(x, run.run_dir / SAMPLES / f"step_{step:08d}.png")
    atomic_write_bytes(path.with_name(LATEST), path.read_bytes())
    return path


class PreviewClock:
    """When the next preview grid is due: ``every`` seconds of ``clock`` after the last grid (0: never)."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self.next = math.inf
        self.restart()

    def due(self) -> bool:
        return self.clock() >= self.next

    def restart(self) -> None:
        """A grid was just written: the next preview is ``every`` seconds from now."""
        self.next = self.clock() + self.every if self.every > 0 else math.inf


class BestKeeper:
    """The best value so far of one evaluation metric (lowest, or highest where that is better)."""

    def __init__(self, record: dict[str, Any] | None = None) -> None:
        self.record = record

    @staticmethod
    def metric_of(metrics: dict[str, float], wanted: list[str]) -> str:
        """The first wanted metric present (``loss_t`` matches ``loss_t/10``), else the first reported."""
        for name in wanted:
            for key in metrics:
                if key == name or key.startswith(f"{name}/"):
                    return key
        return next(iter(metrics))

    def update(self, metrics: dict[str, float], step: int, wanted: list[str]) -> bool:
        """Whether ``metrics`` improve on the best so far (then it becomes the best)."""
        if not metrics:
            return False
        name = self.metric_of(metrics, wanted)
        value = float(metrics[name])
        higher = name.split("/")[0].lower() in HIGHER_IS_BETTER
        if self.record is not None and self.record.get("metric") == name:
            old = self.record["value"]
            if not (value > old if higher else value < old):
                return False
        self.record = {"metric": name, "value": value, "step": step, "higher_is_better": higher}
        return True


class Periodic:
    """Decides what is due at a step and does it (on rank 0 only)."""

    def __init__(self, run, log: Callable[[str], None], best: dict[str, Any] | None,
                 plot: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic) -> None:
        self.run, self.log, self.plot = run, log, plot
        tr, self.eval = run.recipe.train, run.recipe.eval
        self.timesteps: list[int] = []
        if tr.test_loss_every:
            self.timesteps, _, note = test_times(run.process, tr.test_loss_timesteps)
            if note:
                log(f"note: {note}")
        self.best = BestKeeper(best)
        self._evaluate: Callable | None = None
        self._eval_broken = False
        self.previews = PreviewClock(tr.preview_every, clock)  # starts now: the first preview after preview_every s
        self._announced = False

    def eval_due(self, step: int) -> bool:
        return bool(self.eval is not None and self.eval.every and step % self.eval.every == 0)

    def keep_best_due(self, step: int) -> bool:
        """An evaluation that may produce a new best.pt: every rank saves a checkpoint then."""
        return self.eval_due(step) and bool(self.eval.keep_best)

    def after_step(self, step: int, write: Callable[[dict[str, Any]], None],
                   image: Callable[[int, str, torch.Tensor], None] | None = None) -> bool:
        """Run what is due at ``step``; returns whether an evaluation improved on the best.

        ``write`` receives metric records (``{"step": step, ...}``), ``image(step, "samples", grid)`` the grids.
        """
        tr, improved = self.run.recipe.train, False
        with rng.preserved(self.run.device):
            to_loggers = (lambda grid: image(step, SAMPLES, grid)) if image is not None else None
            if tr.sample_every and step % tr.sample_every == 0:
                self.log(f"step {step}: wrote {sample_grid(self.run, step, tr.sample_n, to_loggers)}")
                self.previews.restart()
            elif self.previews.due():
                self._preview(step, to_loggers)
            if tr.test_loss_every and step % tr.test_loss_every == 0:
                losses = test_losses(self.run, self.timesteps, max_batches=tr.test_loss_batches,
                                     batch_size=min(tr.batch_size, 256))
                write({"step": step, **{f"test_loss/t={t}": v for t, v in losses.items()}})
            if self.eval_due(step):
                improved = self._evaluate_now(step, write)
        self.run.model.train()
        return improved

    def _preview(self, step: int, to_loggers) -> None:
        """A preview grid and the plots; the first one's line says where they are and what a preview costs."""
        tr, start = self.run.recipe.train, time.perf_counter()
        path = sample_grid(self.run, step, tr.sample_n, to_loggers, steps=tr.preview_steps)
        self.plot()
        self.previews.restart()
        if not self._announced:
            self._announced = True
            self.log(f"step {step}: wrote {path}, a preview ({tr.sample_n} images, {tr.preview_steps} steps of "
                     f"{self.run.recipe.sampler.name}, {time.perf_counter() - start:.1f} s); another every "
                     f"{tr.preview_every:g} s of training, the newest as {path.with_name(LATEST)}, the loss curve in "
                     f"{self.run.run_dir / PLOTS / 'loss.png'}")

    def _evaluate_now(self, step: int, write) -> bool:
        evaluate = self._evaluator()
        if evaluate is None:
            return False
        metrics = {k: float(v) for k, v in evaluate(self.run, step).items()}
        write({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
        self.log(f"step {step}: " + ", ".join(f"{k} = {v:.4g}" for k, v in metrics.items()))
        return bool(self.eval.keep_best) and self.best.update(metrics, step, list(self.eval.metrics))

    def _evaluator(self) -> Callable | None:
        if self._evaluate is None and not self._eval_broken:
            try:  # another part of gentool; training works without it
                from gentool.evaluation import evaluate_in_training
            except ImportError as exc:
                self._eval_broken = True
                self.log(f"warning: [eval] every = {self.eval.every} but evaluation is unavailable ({exc}); "
                         "training goes on without it")
                return None
            self._evaluate = evaluate_in_training
        return self._evaluate
