"""Consistency models from a trained model: distillation (``consistency``, Song et al. 2023) and tuning (``ect``,
Geng et al. 2024), on processes x_t = x_0 + sigma eps (alpha = 1: EDM's and the VE process).

A consistency model f(x, sigma) maps every point of a probability-flow ODE trajectory to its end at sigma_min
= eps, with the boundary condition f(x, eps) = x (Song et al. 2023, eq. 5). The student keeps its teacher's
network and parameterisation D(x, sigma) and is wrapped as

    f(x, sigma) = D + (eps / sigma) (x - D) = x0^ + eps eps^,

one DDIM step from sigma to eps: f(x, eps) = x exactly, and f = D + O(eps / sigma) elsewhere, so a student
that starts from its teacher's weights starts as the teacher's denoiser (as in Song et al. 2023, App. C, and
Geng et al. 2024, whose c_skip, c_out differ from EDM's by the same O(eps / sigma)). The loss compares
f_theta(x_t, t) with the stop-gradient target f_theta(x_r, r) at a lower noise level r of the same trajectory,
with the same dropout mask (theta^- = theta: mu = 0 of Song and Dhariwal 2023):

* ``consistency`` (Algorithm 2): t = sigma_{n+1} and r = sigma_n of the Karras grid of N levels (eq. 5 of
  Karras et al. 2022), n uniform; x_t = x_0 + t z and x_r one Heun (or Euler) step of the teacher's ODE
  dx/dsigma = (x - D(x, sigma)) / sigma from x_t;
* ``ect``: ln t ~ N(P_mean, P_std^2), r = t (1 - (1 + k sigmoid(-b t)) / q^(a+1)) with the stage
  a = floor(step / stage_steps), clipped at eps (ECT clips at 0, the end of its f), and x_r = x_0 + r z with
  the same z: no teacher beyond its weights.

The distance is the mean squared error over pixels (``l2``) or the pseudo-Huber sqrt(|d|^2 + c^2) - c of
the whole difference (``pseudo_huber``; c = 0: its norm, ECT's adaptive weighting); the weight is 1
(``uniform``) or EDM's lambda(t) = 1 / t^2 + 1 / sigma_data^2 (``edm``, ECT's).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from gentool import Affine, Denoised, RecipeError, karras_sigmas
from gentool_distill.grids import nearest
from gentool_distill.teacher import (HoldsTeacher, Teacher, check_guidance, check_student_labels, drop_labels,
                                     inner_parameterisation, same_parameterisation, same_process, sigma_process,
                                     start_from)


def sigma_of(process: Any, t: Tensor, x: Tensor) -> Tensor:
    """sigma(t) (alpha = 1) as float64 ``[B, 1, ..., 1]``."""
    return process.sigma(t).double().reshape(-1, *[1] * (x.ndim - 1))


def time_of(process: Any, sigma: Tensor) -> Tensor:
    """The process's time of each noise level (its t_of_log_snr at lambda = -2 ln sigma), float32."""
    return torch.as_tensor(process.t_of_log_snr(-2 * sigma.double().log())).float()


class Consistency(Affine):
    """f(x, sigma) = D + (eps / sigma)(x - D) of an inner parameterisation's D (see the module docstring)."""

    name = "consistency"

    def __init__(self, inner: Any, sigma_min: float) -> None:
        self.inner, self.sigma_min = inner, float(sigma_min)

    def inputs(self, process: Any, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner.inputs(process, x, t)

    def denoised(self, process: Any, x: Tensor, t, output: Tensor) -> Denoised:
        d = self.inner.denoised(process, x, t, output)
        sigma = process.sigma(t)
        sigma = sigma.double().to(x.device).reshape(-1, *[1] * (x.ndim - 1)) if isinstance(sigma, Tensor) else sigma
        f = d.x0.double() + (self.sigma_min / sigma) * (x.double() - d.x0.double())
        return Denoised(f.to(x.dtype), ((x.double() - f) / sigma).to(x.dtype), dict(d.extras))

    def target(self, process: Any, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return self.inner.target(process, x0, eps, t)

    def check(self, process: Any) -> str | None:
        why = sigma_process(process) or self.inner.check(process)
        if why:
            return why
        t = float(process.t_of_log_snr(-2 * math.log(self.sigma_min)))
        if abs(float(process.sigma(t)) - self.sigma_min) > 1e-6 * self.sigma_min:
            return (f"its noise never is sigma_min = {self.sigma_min:g} (sigma = {float(process.sigma(t)):.4g} at "
                    f"the nearest time), where a consistency model ends; set objective.sigma_min to the process's "
                    "lowest noise level")
        return None

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.inner, "describe", None)
        inner = dict(describe()) if callable(describe) else {"name": str(self.inner.name)}
        return {"name": self.name, "sigma_min": self.sigma_min, "inner": inner}

    def __repr__(self) -> str:
        return f"Consistency({self.inner!r}, sigma_min={self.sigma_min:g})"


def rewinder(device: torch.device):
    """A function that puts torch's random state back to what it is now: the same dropout masks for f(x_t)
    and its target (Song and Dhariwal 2023; Geng et al. 2024), the state after both as after the first."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def rewind() -> None:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)

    return rewind


class ConsistencyObjective(HoldsTeacher):
    """The shared part: the parameterisation, the teacher, the distance; subclasses draw (t, r) and x_r."""

    #: its network is a consistency function (the ``consistency`` sampler samples only such a model)
    consistency_model = True

    learned_variance = False

    def __init__(self, teacher: str, teacher_objective: dict, sigma_min: float, distance: str, huber_c: float,
                 weighting: str, sigma_data: float, p_uncond: float) -> None:
        self.teacher, self.teacher_objective = teacher, dict(teacher_objective)
        self.parameterisation = Consistency(inner_parameterisation(self.teacher_objective), sigma_min)
        self.sigma_min, self.distance, self.huber_c = sigma_min, distance, huber_c
        self.weighting, self.sigma_data, self.p_uncond = weighting, sigma_data, p_uncond
        self.guidance = 0.0  # the teacher's classifier-free guidance (consistency distillation's option)

    def check(self, process: Any) -> str | None:
        return self.parameterisation.check(process)

    def start(self, run: Any, *, fresh: bool) -> None:
        """Load the teacher; a fresh student takes its weights (the teacher's D is its starting point)."""
        self._run = run
        check_student_labels(run)
        base = self._base(run.device)
        why = same_process(base, run) or refuse_model(base, self.parameterisation.inner)
        if why:
            raise RecipeError(run.recipe.source, "objective.teacher", f"{self.teacher}: {why}", self.teacher)
        self._teacher = Teacher(base.sampling_model, run.process, self.guidance)
        if fresh:
            start_from(run, base.sampling_model)

    def teacher_model(self, process: Any, device: torch.device) -> Teacher:
        if self._teacher is None:  # outside the train loop (a check, a benchmark)
            self._teacher = Teacher(self._base(device).sampling_model, process, self.guidance)
        return self._teacher

    def loss(self, net, process: Any, x0: Tensor, labels: Tensor | None, t: Tensor,
             noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """w(t) d(f_theta(x_t, t), f_theta(x_r, r)) with the target under no gradient, float32 ``[B]``."""
        labels = drop_labels(labels, self.p_uncond)
        sigma_t = sigma_of(process, t, x0)
        x_t = (x0.double() + sigma_t * noise.double()).to(x0.dtype)
        r, x_r = self.pair(process, x0, labels, t, noise, x_t)
        rewind = rewinder(x0.device)
        f_t = self.parameterisation.denoised(process, x_t, t, net(x_t, t, labels)).x0.float()
        rewind()
        with torch.no_grad():
            f_r = self.parameterisation.denoised(process, x_r, r, net(x_r, r, labels)).x0.float()
        diff = (f_t - f_r).flatten(1)
        if self.distance == "l2":
            per = diff.square().mean(1)
        else:
            # the floor keeps |d|'s gradient finite where d = 0 (t = r = sigma_min, where f is x on both sides)
            per = (diff.square().sum(1) + self.huber_c**2).clamp(min=1e-20).sqrt() - self.huber_c
        if self.weighting == "edm":
            per = per * (1 / sigma_t.flatten() ** 2 + 1 / self.sigma_data**2).float()
        return per, {}

    def pair(self, process, x0, labels, t, noise, x_t) -> tuple[Tensor, Tensor]:
        """(r, x_r) for the batch."""
        raise NotImplementedError


class ConsistencyDistillation(ConsistencyObjective):
    """Song et al. (2023), Algorithm 2: adjacent levels of the Karras grid, x_r by the teacher's ODE step."""

    def __init__(self, n: int, rho: float, solver: str, guidance: float, **common: Any) -> None:
        super().__init__(**common)
        self.n, self.rho, self.solver, self.guidance = n, rho, solver, guidance
        self._grid: tuple[Tensor, Tensor] | None = None

    def grid(self, process: Any) -> tuple[Tensor, Tensor]:
        """The N levels sigma_1 < ... < sigma_N = sigma_max (eq. 5) and their times, float32 ``[N]`` each."""
        if self._grid is None:
            sigma_max = float(process.sigma(process.t_max))
            sigmas = torch.tensor(karras_sigmas(sigma_max, self.sigma_min, self.n, self.rho)[::-1],
                                  dtype=torch.float64)
            times = time_of(process, sigmas)
            times[-1] = process.t_max
            self._grid = (process.sigma(times).float(), times)
        return self._grid

    def draw(self, process: Any, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """t = t_{n+1} with n ~ U{1, ..., N - 1} (the upper level of a pair), then z, from ``generator``."""
        _, times = self.grid(process)
        i = torch.randint(1, self.n, (x0.shape[0],), device=x0.device, generator=generator)
        return times.to(x0.device)[i], torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)

    def pair(self, process, x0, labels, t, noise, x_t):
        sigmas, times = (g.to(x0.device) for g in self.grid(process))
        i = nearest(t, times).clamp(min=1)
        r = times[i - 1]
        s_t, s_r = sigma_of(process, t, x0), sigma_of(process, r, x0)
        teacher = self.teacher_model(process, x0.device)
        d = (x_t.double() - teacher(x_t, t, labels).x0.double()) / s_t  # dx/dsigma (Karras et al. 2022, eq. 4)
        x_r = x_t.double() + (s_r - s_t) * d  # Euler
        if self.solver == "heun":  # Heun's correction (Karras et al. 2022, Algorithm 1)
            x_mid = x_r.to(x0.dtype)
            d_r = (x_mid.double() - teacher(x_mid, r, labels).x0.double()) / s_r
            x_r = x_t.double() + (s_r - s_t) * (d + d_r) / 2
        return r, x_r.to(x0.dtype)

    def __repr__(self) -> str:
        return f"ConsistencyDistillation(teacher={self.teacher!r}, n={self.n}, solver={self.solver!r})"


def refuse_model(teacher: Any, inner: Any = None) -> str | None:
    """Why a trained run cannot be made a consistency model whose D is ``inner`` (None: it can)."""
    why = sigma_process(teacher.process)
    if why or inner is None:
        return why
    return same_parameterisation(teacher, inner)


def common_options(teacher, teacher_objective, sigma_min, distance, huber_c, weighting, sigma_data,
                   p_uncond) -> dict:
    """The options both consistency objectives take, checked."""
    for name, value in (("sigma_min", sigma_min), ("sigma_data", sigma_data)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if isinstance(huber_c, bool) or not isinstance(huber_c, (int, float)) or not huber_c >= 0:
        raise ValueError(f"huber_c must be a number >= 0, got {huber_c!r}")
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond!r}")
    return dict(teacher=str(teacher), teacher_objective=dict(teacher_objective), sigma_min=float(sigma_min),
                distance=distance, huber_c=float(huber_c), weighting=weighting, sigma_data=float(sigma_data),
                p_uncond=float(p_uncond))


def consistency(
    *,
    teacher: str,
    teacher_objective: dict[str, Any],
    n: int = 18,
    rho: float = 7.0,
    solver: Literal["heun", "euler"] = "heun",
    sigma_min: float = 0.002,
    distance: Literal["l2", "pseudo_huber"] = "l2",
    huber_c: float = 0.0,
    weighting: Literal["uniform", "edm"] = "uniform",
    sigma_data: float = 0.5,
    p_uncond: float = 0.0,
    guidance: float = 0.0,
) -> ConsistencyDistillation:
    """Consistency distillation (Song et al. 2023, Algorithm 2) of a model of an alpha = 1 process.

    The student keeps the teacher's network, parameterisation and weights,
    wrapped to meet the boundary condition f(x, sigma_min) = x; it learns to
    give one answer along each trajectory of the teacher's ODE, pairs of
    adjacent levels of N (one Heun step of the teacher apart). It samples with
    the ``consistency`` sampler in one or a few steps (Algorithm 1).
    Write it with ``gentool distill RUN --method consistency``.

    Args:
        teacher: the model to distil: a run directory, checkpoint or ``gentool export`` file.
        teacher_objective: the teacher's [objective] table (its parameterisation, which the student keeps).
        n: N, the levels of the Karras grid (18 in the paper for CIFAR-10).
        rho: the grid's exponent (Karras et al. 2022, eq. 5).
        solver: the teacher's ODE step between adjacent levels, ``"heun"`` or ``"euler"``.
        sigma_min: eps, the noise level where trajectories end (f(x, eps) = x).
        distance: ``"l2"``, the mean squared error over pixels, or ``"pseudo_huber"``,
            sqrt(|d|^2 + c^2) - c of the whole difference (Song and Dhariwal 2023).
        huber_c: c of the pseudo-Huber distance (0.00054 sqrt(pixels) in Song and Dhariwal 2023).
        weighting: ``"uniform"`` (lambda = 1, the paper's) or ``"edm"``, 1 / sigma^2 + 1 / sigma_data^2.
        sigma_data: the data's standard deviation in the ``edm`` weighting.
        p_uncond: probability of the null label for teacher and student alike (a
            class-conditional teacher's conditioner p_uncond, moved here by ``gentool distill``).
        guidance: the teacher's classifier-free guidance weight w in its ODE steps
            (the student learns the guided trajectories and samples unguided, as
            Luo et al. 2023's latent consistency models); ``gentool distill`` sets
            it to the teacher's [sampler] guidance.
    """
    check_guidance(guidance)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not rho > 0:
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    common = common_options(teacher, teacher_objective, sigma_min, distance, huber_c, weighting, sigma_data, p_uncond)
    return ConsistencyDistillation(n, float(rho), solver, float(guidance), **common)


# -- gentool distill ------------------------------------------------------------------------------------

def refuse(teacher: Any, method: str) -> str | None:
    return refuse_model(teacher)


def objective_options(teacher: Any, method: str) -> dict[str, Any]:
    options = {"teacher_objective": teacher.recipe.objective.to_dict()}
    sigma_data = getattr(teacher.model.parameterisation, "sigma_data", None)  # EDM's: the data's scale
    if isinstance(sigma_data, (int, float)) and sigma_data > 0:
        options["sigma_data"] = float(sigma_data)
    lowest = getattr(teacher.process, "sigma_min", None)
    if isinstance(lowest, (int, float)) and lowest > 0:
        options["sigma_min"] = float(lowest)
    return options


def train_steps(options: dict[str, Any]) -> int:
    """``consistency``: 2000 steps; ``ect``: eight stages."""
    return 8 * int(options.get("stage_steps", 500)) if options["name"] == "ect" else 2000


def sampler(options: dict[str, Any]) -> dict[str, Any]:
    return {"name": "consistency", "steps": 1, "sigma_min": float(options.get("sigma_min", 0.002))}
