"""The frozen teacher of a distillation, and what every method asks of the run it distils.

A teacher is a trained gentool run (a run directory, a checkpoint or a file
of ``gentool export``; ``gentool distill`` copies it into the distilled run
directory as ``teacher.safetensors``, so that the distillation resumes with
the very weights it started from). Loading it leaves the student's random
state and thread count as they were, so a distillation trains the same with
or without an interruption.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import gentool
from gentool import Denoised, RecipeError, call_network, parameterisation_of

#: the teacher's copy in the distilled run directory
TEACHER_FILE = "teacher.safetensors"


class Teacher:
    """A trained model, frozen: ``teacher(x_t, t, labels) -> Denoised`` on the student's process (no gradient).

    With ``guidance`` w != 0 and labels, it is the classifier-free guided model (Ho and Salimans 2022, eq. 6,
    through the parameterisation's ``guide``): a student of it learns the guided sampler at that w and samples
    unguided (Meng et al. 2023 distil a guided teacher so, for one w). A null label (-1) gets the plain model.
    """

    def __init__(self, model: torch.nn.Module, process: Any, guidance: float = 0.0) -> None:
        self.model = model.requires_grad_(False).eval()
        self.process, self.guidance = process, float(guidance)
        self.param = model.parameterisation
        self._net = call_network(self.model, process, self.param)

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, labels: Tensor | None) -> Denoised:
        cond = self.param.denoised(self.process, x, t, self._net(x, t, labels).float())
        if not self.guidance or labels is None:
            return cond
        null = torch.full_like(labels, -1)
        uncond = self.param.denoised(self.process, x, t, self._net(x, t, null).float())
        return self.param.guide(self.process, x, t, cond, uncond, self.guidance)

    @classmethod
    def copy_of(cls, model: torch.nn.Module, process: Any, guidance: float = 0.0) -> "Teacher":
        """A frozen copy of ``model`` (the student of the round that ends)."""
        return cls(copy.deepcopy(model), process, guidance)


class HoldsTeacher:
    """What every distillation objective shares: the ``teacher`` it names (a run directory, checkpoint or exported
    file), the run being trained (bound by ``start``) and a teacher given in code instead (:meth:`use_teacher`)."""

    teacher: str = ""
    _run: Any = None
    _given: Any = None
    _teacher: Teacher | None = None

    def use_teacher(self, run: Any) -> None:
        """Distil ``run`` (a loaded :class:`gentool.Run`) instead of loading ``teacher`` (the Python API)."""
        self._given = run

    def _base(self, device: torch.device) -> Any:
        """The teacher as a loaded run: the one given in code, else loaded from ``teacher``."""
        return self._given if self._given is not None else load_teacher_run(self.teacher, device, self._run)

    def _take_teacher(self, run: Any, fresh: bool, refuse: Any) -> None:
        """Load the teacher for ``run``, refused in one line (``objective.teacher``) when it is not on ``run``'s
        process, ``refuse(teacher)`` says why, or its parameterisation differs; a ``fresh`` student starts from
        its weights. The teacher guides with ``self.guidance``."""
        base = self._base(run.device)
        why = same_process(base, run) or refuse(base) or same_parameterisation(base, self.parameterisation)
        if why:
            raise RecipeError(run.recipe.source, "objective.teacher", f"{self.teacher}: {why}", self.teacher)
        self._teacher = Teacher(base.sampling_model, run.process, self.guidance)
        if fresh:
            start_from(run, base.sampling_model)


@contextlib.contextmanager
def untouched(device: torch.device):
    """Loading a run seeds torch and sets its thread count (:func:`gentool.build`): here it changes neither."""
    threads = torch.get_num_threads()
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        torch.set_num_threads(threads)


def teacher_path(value: str, run: Any = None) -> Path:
    """The teacher file or run directory ``value``; a teacher copied into the run directory is found there too."""
    path = Path(value).expanduser()
    if not path.exists() and run is not None and (Path(run.run_dir) / path.name).exists():
        return Path(run.run_dir) / path.name  # the run directory moved since gentool distill wrote the recipe
    return path


def load_teacher_run(value: str, device: torch.device, run: Any = None) -> Any:
    """The teacher as a loaded :class:`gentool.Run` (its newest checkpoint or the file itself), on ``device``."""
    path = teacher_path(value, run)
    source = run.recipe.source if run is not None else "the recipe"
    if not value or not path.exists():
        raise RecipeError(source, "objective.teacher", f"{value!r}: no such run directory, checkpoint or exported "
                          "file (the teacher to distil; `gentool distill RUN` writes it)", value)
    with untouched(device):
        teacher = gentool.load_run(path, device=device)
    if teacher.checkpoint is None:
        raise RecipeError(source, "objective.teacher", f"{path} holds no checkpoint: there is no trained model to "
                          "distil (train it first with `gentool run`)", value)
    return teacher


def same_process(teacher: Any, run: Any) -> str | None:
    """Why the teacher's process differs from the student's (None: the same [process] and [schedule])."""
    mine, theirs = run.recipe.to_dict(), teacher.recipe.to_dict()
    for table in ("process", "schedule"):
        if mine.get(table) != theirs.get(table):
            return (f"the teacher was trained with [{table}] {theirs.get(table)} and this run has {mine.get(table)}; "
                    "a student learns its teacher's process, so the tables must be the same")
    return None


def inner_parameterisation(table: dict[str, Any]) -> Any:
    """The parameterisation of the teacher's objective (its recipe table ``{name, options...}``)."""
    if not table or "name" not in table:
        raise ValueError("teacher_objective must be the teacher's [objective] table (gentool distill copies it)")
    options = {k: v for k, v in table.items() if k != "name"}
    try:
        objective = gentool.registry().get("objective", table["name"]).factory(**options)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"teacher_objective: {exc}") from None
    return parameterisation_of(objective)



def described(param: Any) -> dict[str, Any]:
    """What a parameterisation is: its ``describe()`` (name and options, e.g. EDM's sigma_data), else its name."""
    fn = getattr(param, "describe", None)
    return dict(fn()) if callable(fn) else {"name": str(getattr(param, "name", type(param).__name__))}


def same_parameterisation(teacher: Any, param: Any) -> str | None:
    """Why the teacher's network output differs from ``param``, the one the student keeps (None: the same)."""
    theirs, mine = described(teacher.model.parameterisation), described(param)
    if theirs != mine:
        return (f"its network outputs {theirs}, and objective.teacher_objective gives {mine}; set teacher_objective "
                "to the teacher's [objective] table (the student keeps the teacher's parameterisation)")
    return None


def start_from(run: Any, model: torch.nn.Module, what: str = "the teacher") -> None:
    """Give the student (and its EMA) the weights of ``model``; a network of another shape is named."""
    theirs, mine = model.state_dict(), run.model.state_dict()
    wrong = [k for k in mine if k not in theirs or tuple(theirs[k].shape) != tuple(mine[k].shape)]
    wrong += [k for k in theirs if k not in mine]
    if wrong:
        raise RecipeError(run.recipe.source, "denoiser", f"the student starts from {what}'s weights, and its "
                          f"network differs from the teacher's ({len(wrong)} tensor(s), e.g. {wrong[0]}); keep the "
                          "teacher's [denoiser] and [conditioner] tables")
    with torch.no_grad():
        run.model.load_state_dict(theirs)
        if run.ema is not None:
            run.ema.load_state_dict(theirs)


def check_student_labels(run: Any) -> None:
    """The objective drops labels itself (the same for teacher and student): the conditioner must not."""
    p = float(getattr(run.model.conditioner, "p_uncond", 0.0) or 0.0)
    if p > 0:
        raise RecipeError(run.recipe.source, "conditioner.p_uncond", f"{p:g}: a distillation drops labels itself "
                          "(objective.p_uncond), for the teacher and the student alike; set conditioner.p_uncond = 0",
                          p)


def check_guidance(w: float) -> None:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"guidance must be a finite number, got {w!r}")


def drop_labels(labels: Tensor | None, p: float) -> Tensor | None:
    """Each label replaced by -1 (the null label) with probability ``p``, from torch's global generator (which
    checkpoints save), as the conditioner would for classifier-free guidance (Ho and Salimans 2022)."""
    if labels is None or p <= 0:
        return labels
    drop = torch.rand(labels.shape, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, -1), labels)


# -- what a process must be ---------------------------------------------------------------------------

def _probe_times(process: Any) -> list[float]:
    return [process.t_max, process.time_at(0.5), process.time_at(0.05)]


def variance_preserving(process: Any) -> str | None:
    """Why ``process`` is not variance preserving (alpha^2 + sigma^2 = 1), None when it is."""
    for t in _probe_times(process):
        a, s = float(process.alpha(t)), float(process.sigma(t))
        if abs(a * a + s * s - 1) > 1e-5:
            return (f"it is written for variance-preserving processes (alpha^2 + sigma^2 = 1, Salimans and Ho 2022), "
                    f"and this one has alpha^2 + sigma^2 = {a * a + s * s:.4g} at t = {t:g}; use [process] "
                    "name = \"vp\"")
    return None


def sigma_process(process: Any) -> str | None:
    """Why ``process`` is not x_t = x_0 + sigma(t) eps (alpha = 1: EDM's and the VE process), None when it is."""
    for t in _probe_times(process):
        a = float(process.alpha(t))
        if abs(a - 1) > 1e-9:
            return (f"consistency models are written for x_t = x_0 + sigma eps (alpha = 1: EDM's sigma process, Song "
                    f"et al. 2023), and this process has alpha = {a:.4g} at t = {t:g}; distil a model of "
                    "[process] name = \"edm\"")
    return None


def linear_path(process: Any) -> str | None:
    """Why ``process`` is not the rectified-flow path x_t = (1 - t) x_0 + t eps on [0, 1], None when it is."""
    if getattr(process, "discrete", False) or (process.t_data, process.t_max) != (0.0, 1.0):
        return ("reflow straightens the flow x_t = (1 - t) x_0 + t eps on t in [0, 1] (Liu et al. 2022), and this "
                "process is not it; distil a model of [process] name = \"flow\"")
    for t in (0.25, 0.5, 0.9):
        if abs(float(process.alpha(t)) - (1 - t)) > 1e-6 or abs(float(process.sigma(t)) - t) > 1e-6:
            return (f"reflow straightens the flow x_t = (1 - t) x_0 + t eps (Liu et al. 2022), and this process has "
                    f"alpha = {float(process.alpha(t)):.4g}, sigma = {float(process.sigma(t)):.4g} at t = {t:g}; "
                    "distil a model of [process] name = \"flow\"")
    return None
