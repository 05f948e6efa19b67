"""``reflow``: rectified flow's reflow (Liu et al. 2022), straightening a flow model's paths for few Euler steps.

The teacher is a model of the linear path x_t = (1 - t) x_0 + t eps (the ``flow`` process). Its ODE
dx/dt = u(x, t), u = eps^ - x0^, integrated from noise z at t = 1 down to t = 0, couples each z with a
sample X_0 = ODE(z). The student (the teacher's network, parameterisation and weights) is trained on those
pairs as on data (Liu et al. 2022, eq. 1, with X_1 = z):

    t ~ U(0, 1),  x_t = (1 - t) X_0 + t z,  loss = |F_theta(x_t, t) - F*(X_0, z, t)|^2

averaged over pixels, F* the parameterisation's target (for the velocity: z - X_0). The paths of the
coupled flow cross less, so it samples in few Euler steps (``euler``, ``spacing = "uniform"``). The pairs
are made as the batches come, from the noise each batch draws (the teacher's ODE over ``pair_steps``
steps, Heun's method by default), rather than stored: a fresh coupling each step, the same expectation.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from gentool_distill.teacher import (HoldsTeacher, Teacher, check_guidance, check_student_labels, drop_labels,
                                     inner_parameterisation, linear_path)


@torch.no_grad()
def couple(teacher: Teacher, z: Tensor, labels: Tensor | None, steps: int, solver: str) -> Tensor:
    """X_0: the teacher's ODE dx/dt = eps^ - x0^ from z at t = 1 to t = 0, ``steps`` Euler or Heun steps."""
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    x = z

    def velocity(x: Tensor, t: float) -> Tensor:
        d = teacher(x, torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype), labels)
        return d.eps - d.x0

    for t, s in zip(ts, ts[1:]):
        u = velocity(x, t)
        x_next = x + (s - t) * u
        if solver == "heun" and s > 0:  # the last step is Euler's (as in Karras et al. 2022, Algorithm 1)
            x_next = x + (s - t) * (u + velocity(x_next, s)) / 2
        x = x_next
    return x


class Reflow(HoldsTeacher):
    """Reflow (see the module docstring): pairs (X_0, z) of the teacher's ODE, the flow loss on them."""

    learned_variance = False

    def __init__(self, teacher: str, teacher_objective: dict, pair_steps: int, solver: str, p_uncond: float,
                 guidance: float) -> None:
        self.teacher, self.teacher_objective = teacher, dict(teacher_objective)
        self.parameterisation = inner_parameterisation(self.teacher_objective)
        self.pair_steps, self.solver, self.p_uncond, self.guidance = pair_steps, solver, p_uncond, guidance

    def check(self, process: Any) -> str | None:
        return linear_path(process) or self.parameterisation.check(process)

    def start(self, run: Any, *, fresh: bool) -> None:
        """Load the teacher; a fresh student takes its weights (Liu et al.: the 2-rectified flow starts from the 1-)."""
        self._run = run
        check_student_labels(run)
        self._take_teacher(run, fresh, refuse)

    def draw(self, process: Any, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """t ~ U(0, 1], then the noise z (the start of the pair's ODE), from ``generator``."""
        t = 1 - torch.rand((x0.shape[0],), device=x0.device, generator=generator)
        return t, torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)

    def loss(self, net, process: Any, x0: Tensor, labels: Tensor | None, t: Tensor,
             noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """|F_theta(x_t, t) - F*(X_0, z, t)|^2 over pixels with X_0 from the teacher's ODE from z, float32 ``[B]``."""
        if self._teacher is None:  # outside the train loop (a check, a benchmark)
            self._teacher = Teacher(self._base(x0.device).sampling_model, process, self.guidance)
        labels = drop_labels(labels, self.p_uncond)
        pair = couple(self._teacher, noise, labels, self.pair_steps, self.solver)
        tt = t.to(x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))
        x_t = (1 - tt) * pair + tt * noise
        target = self.parameterisation.target(process, pair, noise, t)
        return (net(x_t, t, labels).float() - target.float()).square().flatten(1).mean(1), {}

    def __repr__(self) -> str:
        return f"Reflow(teacher={self.teacher!r}, pair_steps={self.pair_steps}, solver={self.solver!r})"


def reflow(
    *,
    teacher: str,
    teacher_objective: dict[str, Any],
    pair_steps: int = 16,
    solver: Literal["heun", "euler"] = "heun",
    p_uncond: float = 0.0,
    guidance: float = 0.0,
) -> Reflow:
    """Reflow (Liu et al. 2022): retrain a flow model on the (noise, sample) pairs of its own ODE.

    The student keeps the teacher's network, parameterisation and weights and
    learns the straighter flow of the coupling (z, ODE(z)); it samples with
    ``euler`` (``spacing = "uniform"``) in one or a few steps.
    Write it with ``gentool distill RUN --method reflow``.

    Args:
        teacher: the model to reflow: a run directory, checkpoint or ``gentool export`` file.
        teacher_objective: the teacher's [objective] table (its parameterisation, which the student keeps).
        pair_steps: steps of the teacher's ODE from noise to each pair's sample.
        solver: ``"heun"`` (second order, two evaluations a step but the last) or ``"euler"``.
        p_uncond: probability of the null label for teacher and student alike (a
            class-conditional teacher's conditioner p_uncond, moved here by ``gentool distill``).
        guidance: the teacher's classifier-free guidance weight w in the pairs' ODE
            (the student learns the guided flow and samples unguided, as Liu et al.
            2023's InstaFlow); ``gentool distill`` sets it to the teacher's [sampler] guidance.
    """
    check_guidance(guidance)
    if isinstance(pair_steps, bool) or not isinstance(pair_steps, int) or pair_steps < 1:
        raise ValueError(f"pair_steps must be a positive integer, got {pair_steps!r}")
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond!r}")
    return Reflow(str(teacher), dict(teacher_objective), pair_steps, solver, float(p_uncond), float(guidance))


# -- gentool distill ------------------------------------------------------------------------------------

def refuse(teacher: Any, method: str = "reflow") -> str | None:
    """Why a trained run cannot be reflowed (None: it can)."""
    return linear_path(teacher.process)


def objective_options(teacher: Any, method: str) -> dict[str, Any]:
    return {"teacher_objective": teacher.recipe.objective.to_dict()}


def train_steps(options: dict[str, Any]) -> int:
    return 2000


def sampler(options: dict[str, Any]) -> dict[str, Any]:
    return {"name": "euler", "steps": 1, "spacing": "uniform"}
