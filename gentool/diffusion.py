"""Gaussian diffusion maths of Ho et al. (2020) on top of a schedule's betas: the discrete VP process.

:class:`Diffusion` is a :class:`gentool.process.Process` whose times are the
integer steps of the chain: ``alpha(t) = sqrt(alpha-bar_t)``,
``sigma(t) = sqrt(1 - alpha-bar_t)``, the data at ``t = -1`` and sampling from
``t = T - 1``; its grids stay on the trained integer steps
(:mod:`gentool.spacing`), and it keeps the chain's own quantities (the
posterior, the variational bound's terms) for the algorithms that need them.

Timestep convention
-------------------
gentool counts timesteps from **0**: the index ``t`` in ``0..T-1`` stands for
Ho et al.'s ``t + 1`` in ``1..T``. So ``betas[0]`` is the paper's ``beta_1``,
``alphas_cumprod[t]`` is ``alpha-bar_{t+1}``, ``q_sample(x0, t)`` draws the
paper's ``x_{t+1}``, and ``x_t`` at ``t = T - 1`` is the paper's ``x_T``
(nearly pure noise). The sampler's last step (``t = 0``) produces ``x_0``, the
data. Every array below is indexed this way.

All coefficients are computed once in float64 from the betas and stored as
float32 buffers (the float64 originals are kept as ``*_64`` where precision
matters for tests).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from gentool import spacing as _spacing

Prediction = Literal["eps", "x0", "v"]


def extract(a: Tensor, t: Tensor, ndim: int) -> Tensor:
    """``a[t]`` reshaped to ``[B, 1, ..., 1]`` to broadcast over an ``ndim`` tensor."""
    out = a.to(t.device)[t]
    return out.reshape(t.shape[0], *([1] * (ndim - 1)))


class Diffusion(torch.nn.Module):
    """The forward process q and the Gaussian posterior, from a schedule's betas.

    A module only so that ``.to(device)`` moves the buffers; it has no
    parameters (and must never be averaged by an EMA).

    Args:
        betas: float tensor ``[T]`` with values in (0, 1), ``betas[t]`` = paper's beta_{t+1}.
            The last may be 1: zero terminal SNR (alpha-bar_{T-1} = 0, Lin et al.
            2024), which only a model predicting v or x0 can sample from.
    """

    #: the data sits before the first step; sampling starts at T - 1
    t_data = -1.0
    prior_std = 1.0
    discrete = True

    def __init__(self, betas: Tensor) -> None:
        super().__init__()
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1:
            raise ValueError("a schedule must have at least one timestep")
        if not bool(((betas > 0) & (betas < 1)).all()) and not (
            bool(((betas[:-1] > 0) & (betas[:-1] < 1)).all()) and float(betas[-1]) == 1.0
        ):
            raise ValueError("every beta must lie in (0, 1); only the last may be 1 (zero terminal SNR)")
        self.num_timesteps = int(betas.numel())
        alphas = 1.0 - betas  # eq. 4: alpha_t = 1 - beta_t
        alphas_cumprod = torch.cumprod(alphas, 0)  # alpha-bar_t = prod_{s<=t} alpha_s
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # eq. 7: posterior q(x_{t-1} | x_t, x_0) = N(mu-tilde, beta-tilde I)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # beta-tilde_1 = 0; clip the log at the next value as improved-diffusion does
        if self.num_timesteps > 1:
            log_var = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
        else:
            log_var = torch.log(betas)
        table = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": alphas_cumprod.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": log_var,
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
        }
        for name, value in table.items():
            self.register_buffer(name, value.float(), persistent=False)
        self.register_buffer("alphas_cumprod_64", alphas_cumprod, persistent=False)
        self.register_buffer("betas_64", betas, persistent=False)
        self.t_max = float(self.num_timesteps - 1)
        self._abar = alphas_cumprod.tolist()  # python floats: the samplers' scalar coefficients

    # -- the process (gentool.process.Process) -----------------------------
    def abar(self, t: int) -> float:
        """alpha-bar at 0-based step ``t``; ``t = -1`` (the data, x_0) gives 1."""
        return 1.0 if t < 0 else self._abar[t]

    def alpha(self, t):
        """sqrt(alpha-bar_t): a float for an integer ``t`` (1 at -1), float32 ``[B]`` for a timestep tensor."""
        if isinstance(t, Tensor):
            return self.sqrt_alphas_cumprod.to(t.device)[t]
        return self.abar(int(t)) ** 0.5

    def sigma(self, t):
        """sqrt(1 - alpha-bar_t), as :meth:`alpha`."""
        if isinstance(t, Tensor):
            return self.sqrt_one_minus_alphas_cumprod.to(t.device)[t]
        return (1 - self.abar(int(t))) ** 0.5

    def log_snr(self, t):
        """lambda_t = log(alpha-bar_t / (1 - alpha-bar_t)): +inf at the data (-1), -inf where alpha-bar is 0."""
        if isinstance(t, Tensor):
            a = self.alphas_cumprod_64.to(t.device)[t]
            return a.log() - torch.log1p(-a)
        a = self.abar(int(t))
        if a == 1:
            return math.inf
        return -math.inf if a == 0 else math.log(a) - math.log1p(-a)

    def t_of_log_snr(self, lam):
        """The trained step whose lambda is nearest ``lam`` (finite lambdas only): the chain's inverse, snapped."""
        table = _spacing.lambdas(self).to(lam.device if isinstance(lam, Tensor) else "cpu") * 2
        finite = torch.isfinite(table)
        target = torch.as_tensor(lam, dtype=torch.float64, device=table.device).reshape(-1, 1)
        dist = torch.where(finite, (table - target).abs(), math.inf)
        idx = dist.argmin(1)
        return idx.reshape(lam.shape) if isinstance(lam, Tensor) else int(idx[0])

    def grid(self, steps: int | None = None, t_start: float | None = None, spacing: str = "uniform", *,
             rho: float = 7.0, log_snr_min: float | None = None) -> list[int]:
        """The integer steps a sampler visits (:func:`gentool.spacing.spaced_timesteps`); ``log_snr_min`` is full lambda."""
        lambda_min = None if log_snr_min is None else log_snr_min / 2
        t_start = None if t_start is None else int(t_start)
        return _spacing.spaced_timesteps(self, steps, t_start, spacing, lambda_min=lambda_min, rho=rho)

    def noise_label(self, t: Tensor) -> Tensor:
        """The network sees the 0-based integer step itself (int64), as it always has."""
        return t

    def time_at(self, fraction: float) -> int:
        """The step reached after ``round(fraction * T)`` forward steps (SDEdit's t_0; -1: no noise)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"t must be in [0, 1], a fraction of the T = {self.num_timesteps} diffusion steps, got "
                             f"{fraction} (for step k use t = k / {self.num_timesteps})")
        return int(fraction * self.num_timesteps + 0.5) - 1  # round half up

    def x0_from_eps_at(self, x_t: Tensor, t: int, eps: Tensor) -> Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) at one step ``t`` (eq. 4 solved for x_0)."""
        a = self.abar(t)
        return (x_t - (1 - a) ** 0.5 * eps) / a**0.5

    # -- forward process -------------------------------------------------
    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x_0) (eq. 4)."""
        mean = extract(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
        var = extract(1.0 - self.alphas_cumprod, t, x0.ndim).expand_as(x0)
        return mean, var

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (eq. 4)."""
        return (
            extract(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
            + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise
        )

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (eqs. 6-7)."""
        mean = extract(self.posterior_mean_coef1, t, x_t.ndim) * x0 + extract(self.posterior_mean_coef2, t, x_t.ndim) * x_t
        var = extract(self.posterior_variance, t, x_t.ndim)
        log_var = extract(self.posterior_log_variance_clipped, t, x_t.ndim)
        return mean, var, log_var

    # -- conversions between parameterisations --------------------------
    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (eq. 4 solved for x_0)."""
        return extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0) / extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim)

    def v_target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans and Ho 2022)."""
        return extract(self.sqrt_alphas_cumprod, t, x0.ndim) * noise - extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0

    def eps_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        return extract(self.sqrt_alphas_cumprod, t, x_t.ndim) * v + extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * x_t

    def eps_and_x0(self, output: Tensor, x_t: Tensor, t: Tensor, prediction: Prediction) -> tuple[Tensor, Tensor]:
        """A network output of kind ``prediction`` as ``(eps, x0)``, finite where abar_t = 0 for v and x0.

        v: eps = sqrt(abar) v + sqrt(1 - abar) x_t, x0 = sqrt(abar) x_t - sqrt(1 - abar) v;
        x0: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar) (abar_t < 1 at every t);
        eps: x0 from eq. 4, undefined where abar_t = 0.
        """
        a, b = extract(self.sqrt_alphas_cumprod, t, x_t.ndim), extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
        if prediction == "v":
            return a * output + b * x_t, a * x_t - b * output
        if prediction == "x0":
            return (x_t - a * output) / b, output
        return self.to_eps(output, x_t, t, prediction), self.x0_from_eps(x_t, t, output)

    def to_eps(self, output: Tensor, x_t: Tensor, t: Tensor, prediction: Prediction) -> Tensor:
        """Convert a network output of kind ``prediction`` into a noise prediction."""
        if prediction == "eps":
            return output
        if prediction == "x0":
            return self.eps_from_x0(x_t, t, output)
        if prediction == "v":
            return self.eps_from_v(x_t, t, output)
        raise ValueError(f"unknown prediction {prediction!r}; valid: eps, x0, v")

    def target(self, x0: Tensor, t: Tensor, noise: Tensor, prediction: Prediction) -> Tensor:
        """The regression target for a network predicting ``prediction``."""
        if prediction == "eps":
            return noise
        if prediction == "x0":
            return x0
        if prediction == "v":
            return self.v_target(x0, t, noise)
        raise ValueError(f"unknown prediction {prediction!r}; valid: eps, x0, v")

    # -- reverse process ---------------------------------------------------
    def p_mean_variance(
        self,
        eps: Tensor,
        x_t: Tensor,
        t: Tensor,
        *,
        variance: Literal["beta", "beta_tilde"] = "beta",
        clip_denoised: bool = True,
    ) -> dict[str, Tensor]:
        """Mean and variance of p_theta(x_{t-1} | x_t) from a noise prediction.

        The mean is the posterior mean at the predicted x_0 (eq. 11 when
        unclipped); the variance is sigma_t^2 = beta_t or beta-tilde_t (sec. 3.2).
        """
        x0 = self.x0_from_eps(x_t, t, eps)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        mean, post_var, _ = self.q_posterior(x0, x_t, t)
        if variance == "beta":
            var = extract(self.betas, t, x_t.ndim)
        elif variance == "beta_tilde":
            var = post_var
        else:
            raise ValueError(f"unknown variance {variance!r}; valid: beta, beta_tilde")
        return {"mean": mean, "variance": var, "x0": x0}

    def timesteps(self, steps: int | None = None, t_start: int | None = None) -> list[int]:
        """A decreasing subsequence of ``t_start, ..., 0`` with ``steps`` entries.

        Evenly spaced over [0, t_start] and always including both ends, so a
        respaced sampler starts at ``t_start`` and ends at 0 (DDIM's tau).
        """
        t_start = self.num_timesteps - 1 if t_start is None else int(t_start)
        if not 0 <= t_start < self.num_timesteps:
            raise ValueError(f"t_start must be in [0, {self.num_timesteps - 1}], got {t_start}")
        if steps is not None and steps > self.num_timesteps:
            raise ValueError(f"steps ({steps}) is more than the schedule's T = {self.num_timesteps} timesteps; "
                             f"use at most {self.num_timesteps}")
        if steps is None or steps >= t_start + 1:  # e.g. SDEdit from t_start < T: every remaining step
            return list(range(t_start, -1, -1))
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if steps == 1:
            return [t_start]
        ts = torch.linspace(t_start, 0, steps, dtype=torch.float64).round().long().tolist()
        out: list[int] = []
        for v in ts:  # rounding can repeat a value on short ranges
            if not out or v < out[-1]:
                out.append(int(v))
        return out

    # -- training ----------------------------------------------------------
    def training_loss(
        self,
        output: Tensor,
        x0: Tensor,
        t: Tensor,
        noise: Tensor,
        *,
        prediction: Prediction = "eps",
        loss: Literal["l2", "l1"] = "l2",
    ) -> Tensor:
        """Per-sample L_simple (eq. 14): mean over pixels of |target - output|^2 (or |.|)."""
        target = self.target(x0, t, noise, prediction)
        diff = (output.float() - target.float())
        per = diff.square() if loss == "l2" else diff.abs()
        return per.flatten(1).mean(1)


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. (2024), Algorithm 1: betas whose alpha-bar_T is exactly 0, alpha-bar_1 kept.

    sqrt(abar) is shifted so its last value is 0 and scaled so its first is
    unchanged: sqrt(abar)' = (sqrt(abar) - sqrt(abar_T)) sqrt(abar_1) / (sqrt(abar_1) - sqrt(abar_T));
    the betas follow from the ratios of consecutive alpha-bars (the last is 1).
    Usable with any schedule's betas (float64 ``[T]``, T >= 2).
    """
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.numel() < 2:
        raise ValueError("zero terminal SNR needs at least 2 timesteps")
    sqrt_abar = torch.cumprod(1.0 - betas, 0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar.square()
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def snr(diffusion: Diffusion) -> Tensor:
    """Signal-to-noise ratio abar_t / (1 - abar_t) per timestep."""
    a = diffusion.alphas_cumprod_64
    return a / (1 - a)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


LOG2 = math.log(2.0)
