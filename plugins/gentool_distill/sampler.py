"""``consistency``: multistep consistency sampling (Song et al. 2023, Algorithm 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from gentool import DenoiseFn, Process, StepCallback, coefficients, data_time, reverse_loop


def consistency_times(process: Process, steps: int, t_start: float | None) -> list[float]:
    """``steps`` decreasing times from ``t_start`` (default t_max): the Karras grid of steps + 1 levels (eq. 5 of
    Karras et al. 2022) without its last, sigma_min, where a consistency model's trajectories end anyway."""
    if steps == 1:
        return [process.t_max if t_start is None else float(t_start)]
    return list(process.grid(steps + 1, t_start, "karras"))[:-1]


@torch.no_grad()
def consistency(
    denoise: DenoiseFn, process: Process, x_T: Tensor, *, steps: int | None = None, t_start: float | None = None,
    generator: torch.Generator | None = None, callback: StepCallback | None = None,
    sigma_min: float = 0.002,
    times: list[float] = [],  # noqa: B006 - never changed; a recipe option's default
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1) of a consistency model.

    x = f(x_T, T); then for each next time tau: x_tau = x + sqrt(tau^2 - eps^2) z and
    x = f(x_tau, tau) (on a process with alpha != 1: x_tau = alpha x + sqrt(sigma^2 -
    alpha^2 eps^2) z). One network evaluation per step; ``steps = 1`` (the default)
    is one-step generation. The model's x0 prediction is f.

    Args:
        sigma_min: eps, where the model's trajectories end (the objective's sigma_min).
        times: the times after the first (tau_1 > tau_2 > ..., in the process's time: sigma on
            ``edm``; Song et al. use 0.821 for two steps on CIFAR-10); empty: the Karras grid of
            steps + 1 levels without its last.
    """
    if times:
        start = process.t_max if t_start is None else float(t_start)
        ts = [start, *map(float, times)]
        if any(a <= b for a, b in zip(ts, ts[1:])) or ts[-1] <= process.t_data:
            raise ValueError(f"times must decrease from t_start ({start:g}) and stay above the data, got {times}")
    else:
        ts = consistency_times(process, 1 if steps is None else int(steps), t_start)
    end = data_time(process)

    def step(i: int, t, s, x: Tensor) -> tuple[Tensor, Tensor]:
        f = denoise(x, t).x0
        if s == end:
            return f, f
        alpha, sigma = coefficients(process, s)
        z = torch.randn(f.shape, generator=generator, device=f.device, dtype=f.dtype)
        return alpha * f + max(sigma**2 - (alpha * sigma_min) ** 2, 0.0) ** 0.5 * z, f

    return reverse_loop(ts, x_T, step, callback, end)



def _fits_objective(objective) -> str | None:
    """The consistency sampler samples a consistency function, not a denoiser: only a model trained as one."""
    if getattr(objective, "consistency_model", False):
        return None
    return ("it samples a consistency model (trained by gentool distill --method consistency or ect); this "
            "model is a denoiser: sample it with a solver of the reverse process (heun, dpmpp_2m, ...)")


consistency.fits_objective = _fits_objective
