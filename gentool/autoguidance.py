"""Autoguidance: guide a model with a weaker version of itself (Karras et al. 2024).

Karras, Aittala, Kynkaanniemi, Lehtinen, Aila and Laine (2024), "Guiding a
Diffusion Model with a Bad Version of Itself", eq. 2: with D_1 the good
denoiser (x0 prediction) and D_0 a bad one, of the same task and conditioning
but less capable (smaller, or trained for less time),

    D_w(x; sigma) = D_0(x; sigma) + w_paper (D_1(x; sigma) - D_0(x; sigma)),

and w_paper = 1 is D_1 alone. gentool writes guidance weights in the form of
classifier-free guidance here (Ho and Salimans 2022, eq. 6), where w = 0 is
the good prediction alone:

    D = (1 + w) D_good - w D_bad = D_good + w (D_good - D_bad),   so   w_paper = 1 + w.

The paper's best weights (w_paper 2.0 to 2.25 on ImageNet) are w = 1.0 to 1.25
here. The same affine mix is applied to x0 and eps, so x_t = alpha x0 +
sigma eps still holds. It is computed as ``good + w (good - bad)``: with the
bad model equal to the good one the difference is exactly zero, and the result
is the good prediction bit for bit.

Unlike classifier-free guidance it needs no labels: an unconditional model is
guided as well as a conditional one (both models then see the same labels,
or both the null label). The bad model is a run directory or checkpoint (an
earlier checkpoint of the same run, or another run) of the same process and
parameterisation, or a loaded run. Loading a path needs the checkpoint layer,
above this module: :func:`gentool.api.load_run` is registered here as the
loader (:func:`use_loader`) when :mod:`gentool.api` is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from gentool.errors import UsageError
from gentool.parameterisation import Denoised
from gentool.process import Process, Time
from gentool.reverse import DenoiseFn

KINDS = ("cfg", "auto")  # classifier-free guidance (the null label), autoguidance (a weaker model)

_loader: list[Callable[..., Any]] = []  # [load_run], registered by gentool.api
_cache: dict[tuple, Any] = {}  # the guiding runs loaded, by (path, mtime, size, device); a few at most


def autoguided(good: Denoised, bad: Denoised, w: float) -> Denoised:
    """D = D_good + w (D_good - D_bad), the paper's eq. 2 with w_paper = 1 + w, applied to x0 and eps alike."""
    return Denoised(good.x0 + w * (good.x0 - bad.x0), good.eps + w * (good.eps - bad.eps), dict(good.extras))


def make_autoguided_fn(good: DenoiseFn, bad: DenoiseFn, process: Process, guidance: Any) -> DenoiseFn:
    """``denoise(x_t, t)`` guided by ``bad``: ``guidance`` is a :class:`gentool.Guidance` (its w and interval).

    Where the guidance is not active (w = 0, or Karras' sigma outside the
    interval) the good model alone is evaluated: one network call, as with
    classifier-free guidance.
    """
    w = float(guidance.w)

    def denoise(x_t, t: Time) -> Denoised:
        d = good(x_t, t)
        active = guidance.active(process, t)  # a bool, or per example for times [B]
        if w == 0.0 or not bool(active.any() if isinstance(active, torch.Tensor) else active):
            return d
        out = autoguided(d, bad(x_t, t), w)
        if isinstance(active, torch.Tensor):
            m = active.reshape(-1, *[1] * (x_t.ndim - 1))
            out = Denoised(torch.where(m, out.x0, d.x0), torch.where(m, out.eps, d.eps), out.extras)
        return out

    return denoise


def kind_of(options: Any) -> str:
    """The guidance kind of a :class:`gentool.SamplingOptions`: its ``guidance_kind``, else "auto" with a
    ``guide_with``, else "cfg"; "auto" without a ``guide_with`` is refused."""
    kind = options.guidance_kind or ("auto" if options.guide_with is not None else "cfg")
    if kind not in KINDS:
        raise UsageError(f"guidance kind {kind!r} is not valid: choose cfg (classifier-free guidance) or auto "
                         "(autoguidance by a weaker model, given as guide_with)")
    if kind == "auto" and options.guide_with is None:
        raise UsageError("autoguidance needs the weaker model: give guide_with (--guide-with), a run directory "
                         "or checkpoint of the same process, e.g. an earlier checkpoint of the run")
    return kind


def use_loader(load: Callable[..., Any]) -> None:
    """Register ``load(path, device=...) -> Run``, which turns a ``guide_with`` path into a run."""
    _loader[:] = [load]


def guide_run(run: Any, guide: Any) -> Any:
    """The guiding run of ``guide_with``: a loaded run as it is, a path loaded (once) on ``run``'s device;
    checked against ``run`` (:func:`check_pair`)."""
    if isinstance(guide, (str, Path)):
        guide = _load(Path(guide), run.device)
    if not hasattr(guide, "sampling_model") or not hasattr(guide, "recipe"):
        raise UsageError(f"guide_with {guide!r}: expected a run directory, a checkpoint or a loaded run")
    check_pair(run, guide)
    return guide


def _load(path: Path, device: Any) -> Any:
    if not path.exists():
        raise UsageError(f"guide_with {path}: no such run directory or checkpoint")
    if not _loader:
        raise UsageError(f"guide_with {path}: loading a run from a path needs gentool.load_run; pass "
                         "gentool.load_run(path) as guide_with instead")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(device))
    if key not in _cache:
        with torch.random.fork_rng(devices=[]):  # building a run seeds torch's global generator: not the caller's
            guide = _loader[0](path, device=device)
        if guide.checkpoint is None and guide.recipe.train.steps > 0:
            raise UsageError(f"guide_with {path}: it has no checkpoint to load; give a trained run or a checkpoint")
        guide.sampling_model.eval()
        while len(_cache) >= 2:
            _cache.pop(next(iter(_cache)))
        _cache[key] = guide
    return _cache[key]


def describe(run: Any) -> str:
    """``run`` as :func:`check_pair` names it: its place, process (and schedule), parameterisation and classes."""
    recipe, model = run.recipe, run.sampling_model
    where = run.checkpoint if getattr(run, "checkpoint", None) is not None else run.run_dir
    process = recipe.process.name + "".join(f" {k}={v!r}" for k, v in sorted(recipe.process.options.items()))
    schedule = getattr(recipe, "schedule", None)
    if schedule is not None and hasattr(run.process, "betas_64"):
        process += f", schedule {schedule.name}" + "".join(f" {k}={v!r}" for k, v in sorted(schedule.options.items()))
    classes = f", {run.num_classes} classes" if run.num_classes else ", unconditional"
    return f"{where} (process {process}; parameterisation {model.parameterisation.name}{classes})"


def _signature(run: Any) -> tuple:
    recipe = run.recipe
    schedule = recipe.schedule if hasattr(run.process, "betas_64") else None
    return (recipe.process.name, sorted(recipe.process.options.items()),
            None if schedule is None else (schedule.name, sorted(schedule.options.items())),
            run.sampling_model.parameterisation.name, run.num_classes)


def check_pair(good: Any, bad: Any) -> None:
    """Refuse a guiding run of another process, schedule, parameterisation or conditioning (one line, both named)."""
    if _signature(good) != _signature(bad):
        raise UsageError(f"autoguidance needs a guiding model of the same process, parameterisation and classes: "
                         f"{describe(good)} is guided by {describe(bad)}")


__all__ = ["KINDS", "autoguided", "check_pair", "guide_run", "kind_of", "make_autoguided_fn", "use_loader"]
