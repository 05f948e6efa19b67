"""``progressive``: progressive distillation (Salimans and Ho 2022), halving the sampling steps each round.

Round r trains a student to do in one DDIM step what its teacher does in two:
the first teacher is the distilled run's, each later one the student of the
round before (its sampling weights), and every student starts from its
teacher's weights. The student of round r samples in N_r = teacher_steps /
2^(r+1) steps of DDIM (eta = 0) on the ``trailing`` grid (t_i = i / N_r in the
continuous time of the paper), which is the teacher's grid of 2 N_r steps
taken every other time; ``check`` refuses a process whose grids do not nest so.

Algorithm 2, per example: t = t_i with i uniform on the student's grid,
z_t = alpha_t x + sigma_t eps, and with t' and t'' the next two times of the
teacher's grid (t'' may be the data end),

    z_t'  = alpha_t' x^(z_t) + (sigma_t' / sigma_t) (z_t - alpha_t x^(z_t))        (teacher's DDIM step)
    z_t'' = alpha_t'' x^(z_t') + (sigma_t'' / sigma_t') (z_t' - alpha_t' x^(z_t'))   (and another)
    x~    = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

(x~ is the x that one DDIM step of the student from z_t must predict to land on
z_t''), and the loss is w(lambda_t) |x~ - x_theta(z_t)|^2 with the truncated SNR
weight w = max(alpha^2 / sigma^2, 1) (sec. 4) or SNR + 1 (the v-loss). The
student predicts v or x0 (never eps: at 1 step its x0 from eps is unstable, sec. 4).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from gentool import VPrediction, X0Prediction
from gentool_distill.grids import data_end, nearest, scales, time_tensor
from gentool_distill.teacher import (HoldsTeacher, Teacher, check_guidance, check_student_labels, drop_labels,
                                     start_from, variance_preserving)

PREDICTIONS = {"v": VPrediction(), "x0": X0Prediction()}
#: the spacing whose grids nest: the grid of N steps is that of 2N taken every other time
SPACING = "trailing"


def nested_grids(process: Any, steps: int) -> tuple[list[float], list[float]]:
    """The student's grid of ``steps`` times and the teacher's of 2 ``steps``; ValueError unless they nest."""
    student = list(process.grid(steps, spacing=SPACING))
    teacher = list(process.grid(2 * steps, spacing=SPACING))
    if len(student) != steps or len(teacher) != 2 * steps or any(
            abs(float(a) - float(b)) > 1e-6 * max(1.0, abs(float(a))) for a, b in zip(student, teacher[::2])):
        raise ValueError(f"its {SPACING} grid of {steps} steps ({student[:4]}...) is not its grid of {2 * steps} "
                         f"({teacher[:8]}...) taken every other time, so a student cannot stand in for two teacher "
                         "steps")
    return student, teacher


class Progressive(HoldsTeacher):
    """Progressive distillation (see the module docstring); ``start`` binds the run, rounds follow its step."""

    learned_variance = False

    def __init__(self, teacher: str, prediction: str, teacher_steps: int, rounds: int, steps_per_round: int,
                 weighting: str, p_uncond: float, guidance: float) -> None:
        self.teacher, self.prediction, self.teacher_steps = teacher, prediction, teacher_steps
        self.rounds, self.steps_per_round, self.weighting, self.p_uncond = rounds, steps_per_round, weighting, p_uncond
        self.guidance = guidance
        self.parameterisation = PREDICTIONS[prediction]
        self.round = 0  # the round the current teacher belongs to
        self._saved: dict[str, Tensor] | None = None  # a checkpoint's teacher, until start() builds it
        self._grids: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}

    # -- what it fits -----------------------------------------------------------------------------
    def check(self, process: Any) -> str | None:
        why = variance_preserving(process)
        if why:
            return why
        for r in range(self.rounds):
            try:
                nested_grids(process, self.student_steps(r))
            except ValueError as exc:
                return f"round {r + 1} ({self.student_steps(r)} steps): {exc}"
        return None

    def student_steps(self, r: int) -> int:
        """N_r = teacher_steps / 2^(r + 1): the sampling steps of round r's student (0-based r)."""
        return self.teacher_steps >> (r + 1)

    def current_round(self) -> int:
        step = self._run.step if self._run is not None else 0
        return min(step // self.steps_per_round, self.rounds - 1)

    # -- the teacher --------------------------------------------------------------------------------
    def start(self, run: Any, *, fresh: bool) -> None:
        """Load the round's teacher (the given run, or from a checkpoint); a fresh student takes its weights."""
        self._run = run
        check_student_labels(run)
        if self._saved is not None:  # round >= 1 of a resumed run: the teacher is a former student
            model = Teacher.copy_of(run.model, run.process).model
            model.load_state_dict(self._saved)
            self._teacher, self._saved = Teacher(model, run.process), None
        if self._teacher is None or fresh:
            self._take_teacher(run, fresh, refuse)

    def _next_round(self, r: int) -> None:
        """The student becomes the teacher (Algorithm 2: eta <- theta) and the next student starts from it."""
        run = self._run
        current = run.ema if run.ema is not None else run.model
        self._teacher = Teacher.copy_of(current, run.process)
        if current is not run.model:
            start_from(run, current, "its former self")
        self.round = r

    def state_dict(self) -> dict[str, Any]:
        teacher = self._teacher.model.state_dict() if self.round > 0 and self._teacher is not None else None
        return {"round": self.round, "teacher": teacher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = int(state.get("round", 0))
        self._saved = state.get("teacher")
        self._teacher = None

    # -- training ---------------------------------------------------------------------------------------
    def grids(self, process: Any, device: torch.device) -> tuple[Tensor, Tensor]:
        """The current student's times ``[N]`` and the teacher's ``[2N + 1]`` (ending at the data), as tensors."""
        n = self.student_steps(self.round)
        key = (n, str(device))
        if key not in self._grids:
            student, teacher = nested_grids(process, n)
            self._grids[key] = (time_tensor(process, student, device),
                                time_tensor(process, [*teacher, data_end(process)], device))
        return self._grids[key]

    def draw(self, process: Any, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """t uniform on the round's student grid (Algorithm 2: t = i / N), then the noise, from ``generator``."""
        r = self.current_round()
        if r > self.round and self._run is not None:
            self._next_round(r)
        student, _ = self.grids(process, x0.device)
        i = torch.randint(0, len(student), (x0.shape[0],), device=x0.device, generator=generator)
        return student[i], torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)

    def loss(self, net, process: Any, x0: Tensor, labels: Tensor | None, t: Tensor,
             noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """w(lambda_t) |x~ - x_theta(z_t)|^2 averaged over pixels, float32 ``[B]`` (Algorithm 2)."""
        if self._teacher is None:  # called outside the train loop (a check, a benchmark): round 0's teacher
            self._teacher = Teacher(self._base(x0.device).sampling_model, process, self.guidance)
        student, teacher = self.grids(process, x0.device)
        i = nearest(t, student)
        t = student[i]  # a time off the grid (the test loss) is taken at the nearest student time
        t1, t2 = teacher[2 * i + 1], teacher[2 * i + 2]
        (a, s), (a1, s1), (a2, s2) = (scales(process, tt, x0) for tt in (t, t1, t2))
        labels = drop_labels(labels, self.p_uncond)
        z = a * x0 + s * noise
        x_hat = self._teacher(z, t, labels).x0.float()
        z1 = a1 * x_hat + (s1 / s) * (z - a * x_hat)
        x_hat1 = self._teacher(z1, t1, labels).x0.float()
        z2 = a2 * x_hat1 + (s2 / s1) * (z1 - a1 * x_hat1)
        target = (z2 - (s2 / s) * z) / (a2 - (s2 / s) * a)
        x_theta = self.parameterisation.denoised(process, z, t, net(z, t, labels)).x0.float()
        snr = (a / s).double().square().flatten()
        w = snr.clamp(min=1.0) if self.weighting == "truncated_snr" else snr + 1.0
        per = (x_theta - target).square().flatten(1).mean(1) * w.float()
        steps = torch.tensor(float(self.student_steps(self.round)), device=x0.device)
        return per, {"student_steps": steps}

    def __repr__(self) -> str:
        return (f"Progressive(teacher={self.teacher!r}, prediction={self.prediction!r}, teacher_steps="
                f"{self.teacher_steps}, rounds={self.rounds}, steps_per_round={self.steps_per_round})")


def refuse(teacher: Any, method: str = "progressive") -> str | None:
    """Why a trained run cannot be distilled progressively (None: it can)."""
    why = variance_preserving(teacher.process)
    if why:
        return why
    name = str(teacher.model.parameterisation.name)
    if name not in PREDICTIONS:
        return (f"its network predicts {name!r}; progressive distillation needs a model that predicts v or x0 "
                "(Salimans and Ho 2022, sec. 4: x0 from an eps prediction is unstable at few steps); train the teacher "
                "with [objective] prediction = \"v\"")
    return None


def progressive(
    *,
    teacher: str,
    prediction: Literal["v", "x0"] = "v",
    teacher_steps: int = 64,
    rounds: int = 5,
    steps_per_round: int = 1000,
    weighting: Literal["truncated_snr", "snr_plus_one"] = "truncated_snr",
    p_uncond: float = 0.0,
    guidance: float = 0.0,
) -> Progressive:
    """Progressive distillation (Salimans and Ho 2022): each round halves the DDIM steps of the sampler.

    The student has the teacher's network and starts from its weights; round r
    (of ``rounds``, ``steps_per_round`` training steps each) distils two DDIM
    steps of its teacher into one (Algorithm 2), so the final student samples
    with ``ddim`` (eta = 0, ``spacing = "trailing"``) in teacher_steps / 2^rounds
    steps. Write it with ``gentool distill RUN --method progressive``.

    Args:
        teacher: the model to distil: a run directory, checkpoint or ``gentool
            export`` file (``gentool distill`` copies it into the run directory).
        prediction: what the student predicts, ``"v"`` or ``"x0"`` (the teacher's).
        teacher_steps: the DDIM steps of the first teacher (2 N_0); a power of two
            times 2^rounds.
        rounds: halvings of the step count (the final student samples in
            teacher_steps / 2^rounds steps).
        steps_per_round: training steps of each round (train.steps = rounds x this).
        weighting: ``"truncated_snr"``, max(SNR, 1) |x - x^|^2, or ``"snr_plus_one"``,
            (SNR + 1) |x - x^|^2 = |v - v^|^2 (Salimans and Ho 2022, sec. 4).
        p_uncond: probability of the null label for teacher and student alike (a
            class-conditional teacher's classifier-free guidance; its
            conditioner's p_uncond, which ``gentool distill`` moves here).
        guidance: the first teacher's classifier-free guidance weight w (a
            class-conditional teacher): the students learn the guided sampler
            and sample unguided (Meng et al. 2023, for one w); ``gentool
            distill`` sets it to the teacher's [sampler] guidance.
    """
    for name, value in (("teacher_steps", teacher_steps), ("rounds", rounds), ("steps_per_round", steps_per_round)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if teacher_steps % (1 << rounds) or teacher_steps < (1 << rounds):
        raise ValueError(f"teacher_steps ({teacher_steps}) must be a multiple of 2^rounds = {1 << rounds}: each "
                         "round halves the steps, down to teacher_steps / 2^rounds")
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond!r}")
    check_guidance(guidance)
    return Progressive(str(teacher), prediction, teacher_steps, rounds, steps_per_round, weighting, float(p_uncond),
                       float(guidance))


# -- gentool distill ------------------------------------------------------------------------------------

def objective_options(teacher: Any, method: str) -> dict[str, Any]:
    return {"prediction": str(teacher.model.parameterisation.name)}


def train_steps(options: dict[str, Any]) -> int:
    """rounds x steps_per_round."""
    return int(options.get("rounds", 5)) * int(options.get("steps_per_round", 1000))


def sampler(options: dict[str, Any]) -> dict[str, Any]:
    """DDIM (eta = 0) on the final student's grid: teacher_steps / 2^rounds steps, ``trailing``."""
    steps = int(options.get("teacher_steps", 64)) >> int(options.get("rounds", 5))
    return {"name": "ddim", "steps": max(steps, 1), "spacing": SPACING, "eta": 0.0}
