"""``ddpm``: L_simple of Ho et al. (2020), eq. 14 and Algorithm 1, on any process.

On the discrete chain t is the 0-based step (``t`` in ``0..T-1`` is the
paper's ``t + 1``), drawn uniformly; on a continuous process t is drawn
uniformly from (t_data, t_max]. x_t = alpha(t) x_0 + sigma(t) eps and the
network's output is regressed on its parameterisation's target.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from gentool_objectives.min_snr import check_gamma, min_snr_weight_at
from gentool_objectives.offset_noise import check_strength
from gentool_objectives.offset_noise import offset_noise as add_offset

from gentool import EpsPrediction, VPrediction, X0Prediction

CLASSIC = {p.name: p for p in (EpsPrediction(), X0Prediction(), VPrediction())}


def draw_uniform_time(process, n: int, device, generator: torch.Generator | None) -> Tensor:
    """t ~ U{0..T-1} on the discrete chain (Algorithm 1, line 3), else t ~ U(t_data, t_max]."""
    if getattr(process, "discrete", False):
        return torch.randint(0, process.num_timesteps, (n,), device=device, generator=generator)
    u = torch.rand((n,), device=device, generator=generator)
    return process.t_max - (process.t_max - process.t_data) * u  # (t_data, t_max]: never exactly the data


def scales(process, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """alpha(t) and sigma(t) shaped ``[B, 1, ..., 1]`` to scale ``x``."""
    shape = (-1, *[1] * (x.ndim - 1))
    return process.alpha(t).to(x.dtype).reshape(shape), process.sigma(t).to(x.dtype).reshape(shape)


class DDPMObjective:
    """t uniform, eps ~ N(0, I), x_t = alpha(t) x0 + sigma(t) eps; loss = mean over pixels of |target - net(x_t, t)|^p."""

    learned_variance = False

    def __init__(self, prediction: str, loss: str, weighting: str = "none", min_snr_gamma: float = 5.0,
                 offset: float = 0.0) -> None:
        self.prediction, self.kind = prediction, loss
        self.weighting, self.min_snr_gamma, self.offset = weighting, min_snr_gamma, offset

    @property
    def parameterisation(self):
        return CLASSIC[self.prediction]

    def check(self, process) -> str | None:
        """Every process: uniform times and x_t = alpha(t) x0 + sigma(t) eps are all it needs."""
        return None

    def draw(self, process, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Algorithm 1, lines 3-4: one t per example, then the noise (in this order, from ``generator``)."""
        t = draw_uniform_time(process, x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        return t, add_offset(noise, self.offset, generator)  # unchanged (nothing drawn) when offset = 0

    def loss(self, net, process, x0: Tensor, labels: Tensor | None, t: Tensor,
             noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-example L_simple (eq. 14; the target is eps, x0 or v per ``prediction``), float32 ``[B]``."""
        alpha, sigma = scales(process, t, x0)
        x_t = alpha * x0 + sigma * noise  # eq. 4
        out = net(x_t, t, labels)
        diff = out.float() - self.parameterisation.target(process, x0, noise, t).float()
        per = (diff.square() if self.kind == "l2" else diff.abs()).flatten(1).mean(1)
        if self.weighting == "min_snr":  # Hang et al. 2023
            per = per * min_snr_weight_at(process, t, self.min_snr_gamma, self.prediction).to(per.dtype)
        return per, {}

    def __repr__(self) -> str:
        return (f"DDPMObjective(prediction={self.prediction!r}, loss={self.kind!r}, weighting={self.weighting!r}, "
                f"min_snr_gamma={self.min_snr_gamma}, offset={self.offset})")


def ddpm(
    *,
    prediction: Literal["eps", "x0", "v"] = "eps",
    loss: Literal["l2", "l1"] = "l2",
    weighting: Literal["none", "min_snr"] = "none",
    min_snr_gamma: float = 5.0,
    offset_noise: float = 0.0,
) -> DDPMObjective:
    """L_simple (Ho et al. 2020, eq. 14): uniform timesteps, Gaussian noise, unweighted regression.

    Args:
        prediction: what the network outputs: ``"eps"`` the noise (Ho et al.),
            ``"x0"`` the clean image, ``"v"`` sqrt(abar_t) eps - sqrt(1 - abar_t) x0
            (Salimans and Ho 2022). Samplers convert it to a noise prediction.
        loss: ``"l2"`` the squared error of eq. 14, or ``"l1"`` the absolute error.
        weighting: per-example loss weight: ``"none"`` (eq. 14) or ``"min_snr"``,
            min(SNR_t, gamma) / SNR_t for eps, / (SNR_t + 1) for v, and
            min(SNR_t, gamma) for x0 (Hang et al. 2023, Min-SNR-gamma).
        min_snr_gamma: gamma of ``weighting = "min_snr"`` (5 in the paper).
        offset_noise: strength s of offset noise: eps + s * one N(0, 1) draw
            per image and channel (Guttenberg 2023; 0.1 there), for darker
            and brighter images; 0 turns it off.
    """
    check_gamma(min_snr_gamma)
    check_strength(offset_noise)
    return DDPMObjective(prediction, loss, weighting, float(min_snr_gamma), float(offset_noise))
