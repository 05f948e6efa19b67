"""Post-hoc EMA: power-function EMA profiles and their least-squares reconstruction.

Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models" (EDM2), section 3 and appendix C. The power-function EMA of the weights
theta(tau) at training time t is (eq. 1)

    theta_hat_gamma(t) = (gamma + 1) / t^(gamma + 1) * integral_0^t tau^gamma theta(tau) dtau,

an average of the weights so far under the profile p_{t,gamma}(tau) =
(gamma + 1) tau^gamma / t^(gamma + 1) on [0, t] (0 after t). Its standard
deviation relative to t names it (eq. 3):

    sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))),

so sigma_rel = 0.05 is gamma = 16.97 and 0.10 is gamma = 6.94 (the paper's two).
Tracked during training after each optimiser step t (1-based: theta_t are the
weights that step made) as (eq. 2)

    theta_hat_t = beta_t theta_hat_{t-1} + (1 - beta_t) theta_t,   beta_t = (1 - 1/t)^(gamma + 1),

which gives theta_k the weight (k^(gamma+1) - (k-1)^(gamma+1)) / t^(gamma+1):
exactly the profile's integral over (k - 1, k], with theta piecewise constant.
beta_1 = 0, so the value the average starts from never counts.

Snapshots of a few profiles (t_i, gamma_i) saved during training reconstruct
the average of any other profile (t_r, gamma_r) afterwards: the coefficients x
minimising || sum_i x_i p_i - p_r ||^2 over the profiles as functions of tau
solve A x = b with A_ij = <p_i, p_j>, b_i = <p_i, p_r>, and the inner product
of two power-function profiles has a closed form (appendix C.3, Algorithm 3).
The reconstruction is sum_i x_i theta_hat_i: linear in the weights, exact
wherever the profile fit is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from gentool.config import PHEMA_SIGMA_REL_MAX as SIGMA_REL_MAX  # gamma = 0; a larger sigma_rel needs gamma < 0


def sigma_rel_of(gamma: float) -> float:
    """The relative standard deviation of the profile of exponent ``gamma`` (eq. 3)."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def gamma_of(sigma_rel: float) -> float:
    """The exponent gamma >= 0 of relative width ``sigma_rel`` in (0, sqrt(1/12)] (eq. 3 solved for gamma).

    With s = sigma_rel^-2, eq. 3 is the cubic gamma^3 + 7 gamma^2 + (16 - s) gamma
    + (12 - s) = 0 (appendix C.2, Algorithm 2); its largest real root is the one.
    """
    if not 0 < sigma_rel <= SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel {sigma_rel!r} is outside (0, {SIGMA_REL_MAX:.4f}]: 0.05 and 0.10 are the "
                         "paper's; sqrt(1/12) = 0.2887 averages every step equally")
    s = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return max(float(r.real) for r in roots)


def power_beta(gamma: float, t: int) -> float:
    """beta_t = (1 - 1/t)^(gamma + 1) for the update after optimiser step ``t`` (1-based; eq. 2)."""
    if t < 1:
        raise ValueError(f"the power EMA counts optimiser steps from 1, got t = {t}")
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


def profile_inner(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """<p_a, p_b> = integral of p_{t_a,gamma_a} p_{t_b,gamma_b} over tau (appendix C.3); arrays broadcast.

    The integral runs to min(t_a, t_b) = lo: (gamma_a + 1)(gamma_b + 1) lo^(gamma_a + gamma_b + 1) /
    ((gamma_a + gamma_b + 1) t_a^(gamma_a + 1) t_b^(gamma_b + 1)), written here as
    (gamma_a + 1)(gamma_b + 1) / (gamma_a + gamma_b + 1) * (lo / hi)^gamma_hi / hi, with hi the
    later time and gamma_hi its exponent, so that no power of a large t overflows.
    """
    t_a, gamma_a, t_b, gamma_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    lo, hi = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
    gamma_hi = np.where(t_a >= t_b, gamma_a, gamma_b)
    return (gamma_a + 1) * (gamma_b + 1) / (gamma_a + gamma_b + 1) * (lo / hi) ** gamma_hi / hi


@dataclass(frozen=True)
class Solution:
    """The coefficients of a reconstruction and how well the profiles fit the target."""

    coefficients: np.ndarray  # [n], one per input profile, summing to 1
    fit_error: float  # || sum_i x_i p_i - p_r || / || p_r ||: the relative L2 error of the profile fit


def solve_coefficients(ts: Sequence[float], gammas: Sequence[float], t_r: float, gamma_r: float) -> Solution:
    """The least-squares coefficients that combine the profiles (ts, gammas) into (t_r, gamma_r) (Algorithm 3).

    The coefficients are scaled to sum to 1 (as the reference implementation
    does), so a weight that never changed is reconstructed exactly; the fit
    error is that of the scaled coefficients.
    """
    ts, gammas = np.asarray(ts, dtype=np.float64), np.asarray(gammas, dtype=np.float64)
    if ts.size == 0:
        raise ValueError("no input profiles to reconstruct from")
    a = profile_inner(ts[:, None], gammas[:, None], ts[None, :], gammas[None, :])
    b = profile_inner(ts, gammas, t_r, gamma_r)
    x = np.linalg.lstsq(a, b, rcond=None)[0]
    x = x / x.sum()
    c = float(profile_inner(t_r, gamma_r, t_r, gamma_r))
    squared = float(x @ a @ x - 2 * x @ b + c)  # || sum_i x_i p_i - p_r ||^2
    return Solution(x, math.sqrt(max(squared, 0.0) / c))


class PowerEMA:
    """Power-function EMAs of a module's parameters, one per sigma_rel, updated after every optimiser step.

    Buffers are not averaged: a snapshot takes the module's own (as the EMA of
    :mod:`gentool.engine.ema` does).
    """

    def __init__(self, module: nn.Module, sigma_rels: Sequence[float]) -> None:
        self.module = module
        self.sigma_rels = [float(s) for s in sigma_rels]
        self.gammas = [gamma_of(s) for s in self.sigma_rels]
        self.step = 0  # the optimiser step of the last update (t)
        with torch.no_grad():
            self.averages = [{n: p.detach().clone() for n, p in module.named_parameters()} for _ in self.sigma_rels]

    @torch.no_grad()
    def update(self, t: int) -> None:
        """Take in the weights of optimiser step ``t`` (1-based) into every average (eq. 2)."""
        params = [p.detach() for _, p in self.module.named_parameters()]
        for gamma, average in zip(self.gammas, self.averages):
            torch._foreach_lerp_(list(average.values()), params, 1.0 - power_beta(gamma, t))
        self.step = t

    def snapshot(self, i: int) -> dict[str, torch.Tensor]:
        """Average ``i`` as a full state dict of the module (its buffers as they are now), on the CPU."""
        state = self.module.state_dict()
        state.update(self.averages[i])
        return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}

    def state_dict(self) -> dict:
        return {"sigma_rels": list(self.sigma_rels), "step": self.step, "averages": self.averages}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if [float(s) for s in state["sigma_rels"]] != self.sigma_rels:
            raise ValueError(f"the saved post-hoc EMA tracks sigma_rel {state['sigma_rels']}, not {self.sigma_rels}")
        for mine, saved in zip(self.averages, state["averages"]):
            if mine.keys() != saved.keys():
                raise ValueError("the saved post-hoc EMA averages other parameters than the model's")
            for name, tensor in mine.items():
                tensor.copy_(saved[name])
        self.step = int(state["step"])
