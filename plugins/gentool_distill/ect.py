"""``ect``: easy consistency tuning (Geng et al. 2024), consistency training that starts from a trained model.

Per example ln t ~ N(P_mean, P_std^2), the same noise z on both sides,

    r = t (1 - (1 + k sigmoid(-b t)) / q^(a+1)),   x_t = x_0 + t z,   x_r = x_0 + r z,

with the stage a = floor(step / stage_steps), and the loss lambda(t) d(f_theta(x_t, t), f_theta^-(x_r, r)) of
:mod:`gentool_distill.consistency` (its parameterisation f = D + (eps / sigma)(x - D), its distances and
weights). The teacher gives the starting weights only. r is clipped at eps, where the student's f is x_r itself
(ECT clips at 0, where its own f ends).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from gentool_distill.consistency import (ConsistencyObjective, common_options, objective_options, refuse, sampler,
                                         sigma_of, time_of, train_steps)

#: ``gentool distill --method ect`` makes its recipe as consistency distillation does (the same student and sampler)
__all__ = ["ConsistencyTuning", "ect", "objective_options", "refuse", "sampler", "train_steps"]


class ConsistencyTuning(ConsistencyObjective):
    """Geng et al. (2024): log-normal t, r by the shrinking mapping of the training stage, x_r on the same noise."""

    def __init__(self, p_mean: float, p_std: float, q: float, k: float, b: float, stage_steps: int,
                 **common: Any) -> None:
        super().__init__(**common)
        self.p_mean, self.p_std, self.q, self.k, self.b, self.stage_steps = p_mean, p_std, q, k, b, stage_steps

    def stage(self) -> int:
        return (self._run.step if self._run is not None else 0) // self.stage_steps

    def draw(self, process: Any, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """ln t ~ N(P_mean, P_std^2) as the process's time (within [sigma_min, t_max]), then z, from ``generator``."""
        z = torch.randn((x0.shape[0],), device=x0.device, generator=generator, dtype=torch.float64)
        sigma = (self.p_mean + self.p_std * z).exp().clamp(self.sigma_min, float(process.sigma(process.t_max)))
        t = time_of(process, sigma).clamp(max=process.t_max).to(x0.device)
        return t, torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)

    def pair(self, process, x0, labels, t, noise, x_t):
        sigma_t = process.sigma(t).double()
        decay = (1 + self.k * torch.sigmoid(-self.b * sigma_t)) / self.q ** (self.stage() + 1)
        # below the model's end sigma_min (ECT's r = 0, where its f is x itself): r = sigma_min, where f(x_r) = x_r
        sigma_r = (sigma_t * (1 - decay)).clamp(min=self.sigma_min)
        r = time_of(process, sigma_r).to(t.device)
        x_r = x0.double() + sigma_of(process, r, x0) * noise.double()
        return r, x_r.to(x0.dtype)

    def __repr__(self) -> str:
        return f"ConsistencyTuning(teacher={self.teacher!r}, q={self.q}, stage_steps={self.stage_steps})"


def ect(
    *,
    teacher: str,
    teacher_objective: dict[str, Any],
    p_mean: float = -1.1,
    p_std: float = 2.0,
    q: float = 4.0,
    k: float = 8.0,
    b: float = 1.0,
    stage_steps: int = 500,
    sigma_min: float = 0.002,
    distance: Literal["l2", "pseudo_huber"] = "pseudo_huber",
    huber_c: float = 0.0,
    weighting: Literal["uniform", "edm"] = "edm",
    sigma_data: float = 0.5,
    p_uncond: float = 0.0,
) -> ConsistencyTuning:
    """Easy consistency tuning (Geng et al. 2024): consistency training that starts from a trained model.

    The student keeps the teacher's network, parameterisation and weights
    (wrapped to meet f(x, sigma_min) = x) and compares f at t and at r < t on
    the same noise, r closing in on t stage by stage; the teacher's weights are
    all it takes from the teacher. Samples with the ``consistency`` sampler.
    Write it with ``gentool distill RUN --method ect``.

    Args:
        teacher: the model to tune: a run directory, checkpoint or ``gentool export`` file.
        teacher_objective: the teacher's [objective] table (its parameterisation, which the student keeps).
        p_mean: mean of ln t (-1.1 in the paper).
        p_std: standard deviation of ln t (2.0 in the paper).
        q: the factor by which r / t approaches 1 at each stage (r = t (1 - n(t) / q^(a+1))).
        k: n(t) = 1 + k sigmoid(-b t): smaller gaps where t is large.
        b: see k.
        stage_steps: training steps of each stage a (the gap shrinks q-fold after each).
        sigma_min: eps, the noise level where trajectories end (f(x, eps) = x).
        distance: ``"pseudo_huber"``, sqrt(|d|^2 + c^2) - c (c = 0: the norm |d|, the
            paper's adaptive weighting), or ``"l2"``, the mean squared error over pixels.
        huber_c: c of the pseudo-Huber distance (0 in the paper).
        weighting: ``"edm"``, 1 / t^2 + 1 / sigma_data^2 (the paper's), or ``"uniform"``.
        sigma_data: the data's standard deviation in the ``edm`` weighting.
        p_uncond: probability of the null label for the student (a class-conditional
            teacher's conditioner p_uncond, moved here by ``gentool distill``).
    """
    for name, value in (("p_std", p_std), ("q", q), ("b", b)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if q <= 1:
        raise ValueError(f"q must be above 1 (the gap shrinks by q each stage), got {q!r}")
    if isinstance(stage_steps, bool) or not isinstance(stage_steps, int) or stage_steps < 1:
        raise ValueError(f"stage_steps must be a positive integer, got {stage_steps!r}")
    return ConsistencyTuning(float(p_mean), float(p_std), float(q), float(k), float(b), stage_steps,
                             **common_options(teacher, teacher_objective, sigma_min, distance, huber_c, weighting,
                                       sigma_data, p_uncond))
