"""The toolkit every sampler shares, written against a process's alpha and sigma.

A sampler stays a plain function (as in k-diffusion); what they all need lives
here once, for every :class:`gentool.process.Process`:

* :func:`denoise_at`: one network evaluation as a :class:`gentool.Denoised`
  record (x0, eps, extras), x0 clipped where asked;
* :func:`coefficients`: alpha and sigma at a time, (1, 0) at the data end;
* :func:`posterior`: the Gaussian posterior q(x_s | x_t, x_0) between two
  times of any process (Ho et al. 2020, eq. 7, on a respaced grid; Kingma et
  al. 2021, eq. 32 in alpha and sigma), with the upper and lower variances;
* :func:`ddim_update`: x_s = alpha_s x0 + sqrt(sigma_s^2 - s^2) eps (Song et al.
  2020, eq. 12 without its noise term);
* :func:`ancestral_step`: one step of Ho et al.'s Algorithm 2 between two
  times (the ``ancestral`` sampler and RePaint share it);
* :func:`renoise`: a draw of q(x_s | x_t) for s > t (RePaint's jump back);
* :func:`churn_time`: the time whose noise level is (1 + gamma) times higher
  (Karras et al. 2022, Algorithm 2);
* :func:`reverse_loop`: the loop over a grid with its callback;
* :func:`ddim_invert`: DDIM inversion (the deterministic ODE run upwards).

Times are the process's own: integers ``0..T-1`` on the discrete chain (with
the data at ``-1``), real numbers elsewhere (the data at ``process.t_data``).
The spacings of the discrete chain are in :mod:`gentool.spacing` (re-exported).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from gentool.parameterisation import VARIANCE, Denoised
from gentool.process import Process, Time
from gentool.spacing import (LAMBDA_MIN, SPACINGS, Spacing, abar, lambda_range, lambdas, log_snr_half,  # noqa: F401
                             outlying_end, sigma_of, snap_lambdas, spaced_timesteps, trailing_timesteps)
from gentool.vlb import interpolate_log_variance

#: ``denoise(x_t, t) -> Denoised``: the sampling model, conditioning and guidance bound.
DenoiseFn = Callable[[Tensor, Time], Denoised]
#: ``step(i, t, s, x) -> (x_s, x0_hat)``: one reverse step from time t to s.
Step = Callable[[int, float, float, Tensor], tuple[Tensor, Tensor]]


def coefficients(process: Process, t: float) -> tuple[float, float]:
    """(alpha, sigma) at time ``t`` as floats; (1, 0) at the data end."""
    if t == process.t_data:
        return 1.0, 0.0
    return float(process.alpha(t)), float(process.sigma(t))


def denoise_at(denoise: DenoiseFn, x: Tensor, t: float, *, clip_denoised: bool = False) -> Denoised:
    """One evaluation at ``t``; ``clip_denoised`` clips its x0 to [-1, 1] (eps as predicted)."""
    d = denoise(x, t)
    if clip_denoised:
        d = Denoised(d.x0.clamp(-1, 1), d.eps, d.extras)
    return d


def posterior(process: Process, t: float, s: float) -> tuple[float, float, float, float]:
    """q(x_s | x_t, x_0) for s < t: ``(coef_x0, coef_xt, var_upper, var_lower)``.

    With alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 -
    alpha_{t|s}^2 sigma_s^2 (the variance of q(x_t | x_s)), the posterior mean is
    (alpha_s sigma_{t|s}^2 / sigma_t^2) x_0 + (alpha_{t|s} sigma_s^2 / sigma_t^2) x_t and
    its variance sigma_{t|s}^2 sigma_s^2 / sigma_t^2 (``var_lower``, Ho et al.'s
    beta-tilde); ``var_upper`` is sigma_{t|s}^2 (their beta). On the discrete
    chain these are eq. 7 with alpha-bar_{t-1} replaced by alpha-bar_s
    (improved-diffusion's respacing).
    """
    if getattr(process, "discrete", False) and hasattr(process, "abar"):  # the chain's own alpha-bars
        a_t, a_s = process.abar(int(t)), process.abar(int(s))
        beta = 1.0 - a_t / a_s
        return (a_s**0.5 * beta / (1 - a_t), (1 - beta) ** 0.5 * (1 - a_s) / (1 - a_t), beta,
                beta * (1 - a_s) / (1 - a_t))
    alpha_t, sigma_t = coefficients(process, t)
    alpha_s, sigma_s = coefficients(process, s)
    alpha_ts = alpha_t / alpha_s
    var_ts = sigma_t**2 - alpha_ts**2 * sigma_s**2
    return (alpha_s * var_ts / sigma_t**2, alpha_ts * sigma_s**2 / sigma_t**2, var_ts,
            var_ts * sigma_s**2 / sigma_t**2)


def posterior_step(x: Tensor, x0: Tensor, a_t: float, a_s: float) -> tuple[Tensor, float]:
    """Mean of q(x_s | x_t, x0) on the respaced discrete chain from alpha-bars, and beta_{t->s} = 1 - abar_t / abar_s."""
    beta = 1.0 - a_t / a_s
    mean = (a_s**0.5 * beta / (1 - a_t)) * x0 + ((1 - beta) ** 0.5 * (1 - a_s) / (1 - a_t)) * x
    return mean, beta


def learned_variance(d: Denoised, var_upper: float, var_lower: float) -> Tensor | None:
    """The learned variance of a step (Nichol and Dhariwal 2021, eq. 15) from the record's ``variance_v``, else None."""
    v = d.extras.get(VARIANCE)
    if v is None:
        return None
    return interpolate_log_variance(math.log(var_upper), math.log(var_lower), v).exp()


def ancestral_step(denoise: DenoiseFn, process: Process, x: Tensor, t: float, s: float, *,
                   generator: torch.Generator | None, variance: str = "beta",
                   clip_denoised: bool = True) -> tuple[Tensor, Tensor]:
    """x_s ~ N(mu-tilde(x_t, x0_hat), var) (Ho et al. 2020, Algorithm 2, between the times t > s); ``(x_s, x0_hat)``.

    The mean is the posterior's at the predicted x0 (eqs. 7 and 11); ``var`` is
    the step's ``"beta"`` (upper) or ``"beta_tilde"`` (posterior) variance, or
    the model's learned one (Nichol and Dhariwal 2021, eq. 15). The step to the
    data adds no noise (z = 0 at t = 1).
    """
    d = denoise_at(denoise, x, t, clip_denoised=clip_denoised)
    c_x0, c_x, var_upper, var_lower = posterior(process, t, s)
    mean = c_x0 * d.x0 + c_x * x
    if s == data_time(process):
        return mean, d.x0
    var = learned_variance(d, var_upper, var_lower)
    if var is None:
        var = var_upper if variance == "beta" else var_lower
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return mean + var**0.5 * noise, d.x0


def ddim_update(x0: Tensor, eps: Tensor, alpha_s: float, sigma_s: float, noise_std: float = 0.0) -> Tensor:
    """Song et al. (2020) eq. 12 without its noise term: alpha_s x0 + sqrt(sigma_s^2 - noise_std^2) eps."""
    return alpha_s * x0 + max(sigma_s**2 - noise_std**2, 0.0) ** 0.5 * eps


def ddim_step(x0: Tensor, eps: Tensor, a_s: float, sigma: float = 0.0) -> Tensor:
    """:func:`ddim_update` on the discrete chain from alpha-bar: sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps."""
    return a_s**0.5 * x0 + max(1 - a_s - sigma**2, 0.0) ** 0.5 * eps


def renoise(process: Process, x: Tensor, t: float, s: float, generator: torch.Generator | None) -> Tensor:
    """x_s ~ q(x_s | x_t) = N(alpha_{s|t} x_t, sigma_{s|t}^2 I) for s > t (Ho et al. eq. 2 over several steps)."""
    if getattr(process, "discrete", False) and hasattr(process, "abar"):
        ratio = process.abar(int(s)) / process.abar(int(t))
        scale, var = ratio**0.5, 1 - ratio
    else:
        alpha_t, sigma_t = coefficients(process, t)
        alpha_s, sigma_s = coefficients(process, s)
        scale = alpha_s / alpha_t
        var = sigma_s**2 - scale**2 * sigma_t**2
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return scale * x + max(var, 0.0) ** 0.5 * noise


def karras_sigma(process: Process, t: float) -> float:
    """Karras et al.'s noise level sigma(t) / alpha(t) = exp(-lambda / 2): 0 at the data, inf where alpha = 0."""
    alpha, sigma = coefficients(process, t)
    if getattr(process, "discrete", False) and hasattr(process, "abar"):
        return sigma_of(process.abar(int(t)))
    return math.inf if alpha == 0 else sigma / alpha


def churn_time(process: Process, t: float, gamma: float) -> float:
    """The time whose Karras sigma is sigma_t (1 + gamma) (snapped on the discrete chain).

    A finite target log-SNR never gives infinite noise; a process whose time
    extends past ``t_max`` (EDM's t = sigma) may churn above it, as Algorithm 2 does.
    """
    target = float(process.log_snr(t)) - 2 * math.log1p(gamma)  # lambda = -2 log sigma
    t_hat = process.t_of_log_snr(target)
    return max(t_hat, t) if getattr(process, "discrete", False) else float(t_hat)


def reverse_loop(ts: list[float], x: Tensor, step: Step, callback: Callable[[dict], Tensor | None] | None = None,
                 t_data: float = -1) -> Tensor:
    """Walk ``ts[0] > ts[1] > ... > ts[-1]`` and then to the data (``t_data``), one ``step`` each.

    After each step ``callback({"i", "t", "t_next", "x", "x0"})`` sees the new
    state ``x`` at ``t_next``; a tensor it returns replaces ``x``.
    """
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else t_data
        x, x0 = step(i, t, s, x)
        if callback is not None:
            replaced = callback({"i": i, "t": t, "t_next": s, "x": x, "x0": x0})
            if replaced is not None:
                x = replaced
    return x


def data_time(process: Process) -> float:
    """The data end as the loop reports it: ``-1`` on the discrete chain, ``process.t_data`` elsewhere."""
    return int(process.t_data) if getattr(process, "discrete", False) else process.t_data


@torch.no_grad()
def ddim_invert(denoise: DenoiseFn, process: Process, x0: Tensor, *, steps: int | None = None,
                t_end: float | None = None, spacing: str = "uniform",
                callback: Callable[[dict], Tensor | None] | None = None) -> Tensor:
    """DDIM inversion (Song et al. 2020, sec. 4.3): the deterministic DDIM ODE (eta = 0) run from data to noise.

    Visits the times of ``process.grid(steps, t_end, spacing)`` upwards,
    starting from the data. The step from p to t evaluates the noise at the
    current state and the *target* time, eps_hat = eps(x_p, t) (Dhariwal and
    Nichol 2021, App. F: x_p and x_t are close), and moves along it:
    x_t = alpha_t x0_hat + sigma_t eps_hat with x0_hat = (x_p - sigma_p eps_hat) / alpha_p.
    Returns x at ``t_end`` (default ``t_max``), which the ``ddim`` sampler (eta = 0,
    same steps and spacing, no clipping) maps back to ``x0`` up to the
    discretisation error. ``callback`` sees ``{"i", "t", "t_next", "x", "x0"}`` with t_next > t.
    """
    ts = list(process.grid(steps, t_end, spacing))[::-1]
    x, p = x0, data_time(process)
    for i, t in enumerate(ts):
        alpha_p, sigma_p = coefficients(process, p)
        alpha_t, sigma_t = coefficients(process, t)
        eps = denoise(x, t).eps
        x0_hat = (x - sigma_p * eps) / alpha_p
        x = ddim_update(x0_hat, eps, alpha_t, sigma_t)
        if callback is not None:
            replaced = callback({"i": i, "t": p, "t_next": t, "x": x, "x0": x0_hat})
            if replaced is not None:
                x = replaced
        p = t
    return x
