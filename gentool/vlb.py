"""The variational bound's terms and the learned reverse variance (Nichol and Dhariwal 2021).

Timesteps are 0-based as everywhere in gentool: the term at ``t = 0`` is Ho
et al.'s decoder L_0 = -log p(x_0 | x_1) and the terms at ``t = 1..T-1`` are
their KLs L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)).

A network with a learned variance outputs, per pixel, a value v in [-1, 1]
next to its prediction; sec. 3.1, eq. 15, interpolates in the log domain
between the two fixed choices of Ho et al.:

    frac = (v + 1) / 2,  log sigma_t^2 = frac log beta_t + (1 - frac) log beta-tilde_t

with beta-tilde's log clipped at t = 0 (where beta-tilde is 0) as in
improved-diffusion. ``frac = 1`` is sigma^2 = beta, ``frac = 0`` is beta-tilde.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool.diffusion import Diffusion, extract, normal_kl

LN2 = math.log(2.0)
HALF_BIN = 1.0 / 255.0  # data on 256 levels in [-1, 1]: bins of width 2/255

#: The attribute through which an ``eps_fn`` of a learned-variance model hands
#: the samplers its variance: after every call, ``eps_fn.variance_v`` holds the
#: network's v output for that call (x_t's shape; for a guided batch, the
#: conditional half's). An ``eps_fn`` without it has no learned variance.
VARIANCE_ATTR = "variance_v"


def last_variance(eps_fn: object) -> Tensor | None:
    """The v output of ``eps_fn``'s last call, or ``None`` for a model without a learned variance."""
    return getattr(eps_fn, VARIANCE_ATTR, None)


def split_output(output: Tensor, learned_variance: bool) -> tuple[Tensor, Tensor | None]:
    """A network output as ``(prediction, v)``: the first C channels and the last C (``v = None`` when not learned)."""
    if not learned_variance:
        return output, None
    if output.shape[1] % 2:
        raise ValueError(f"a learned-variance network must output 2C channels, got {output.shape[1]}")
    prediction, v = output.chunk(2, dim=1)
    return prediction, v


def interpolate_log_variance(log_beta: Tensor, log_beta_tilde: Tensor, v: Tensor) -> Tensor:
    """log sigma^2 = frac log beta + (1 - frac) log beta-tilde, frac = (v + 1) / 2 (eq. 15).

    ``v`` is the network's raw variance output, meant to lie in [-1, 1] (it is
    not clipped, as in improved-diffusion); the two logs broadcast against it.
    """
    frac = (v + 1.0) / 2.0
    return frac * log_beta + (1.0 - frac) * log_beta_tilde


def learned_log_variance(diffusion: Diffusion, v: Tensor, t: Tensor) -> Tensor:
    """log sigma_t^2 of a learned-variance model at 0-based ``t`` ``[B]`` from its output ``v``."""
    log_beta = extract(torch.log(diffusion.betas), t, v.ndim)
    log_beta_tilde = extract(diffusion.posterior_log_variance_clipped, t, v.ndim)
    return interpolate_log_variance(log_beta, log_beta_tilde, v.float())


def log1mexp(d: Tensor) -> Tensor:
    """log(1 - exp(d)) for d <= 0, accurate at both ends (Maechler 2012: expm1 above -log 2, log1p below).

    Each branch sees only its own half of the inputs, so neither gives the
    other's gradient an inf or a nan.
    """
    near = d > -LN2
    return torch.where(near, torch.log(-torch.expm1(d.clamp(min=-LN2))), torch.log1p(-torch.exp(d.clamp(max=-LN2))))


def log_normal_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a < b, in log space: finite and accurate however far in either tail.

    log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - Phi(a) / Phi(b)), taken in the
    lower tail (an interval above 0 is mirrored: Phi(b) - Phi(a) = Phi(-a) -
    Phi(-b)), where ``log_ndtr`` keeps its relative precision; a difference of
    ``ndtr`` values underflows to 0 below about -8.3 sigma.
    """
    flip = a > 0
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_b = torch.special.log_ndtr(b)
    d = (torch.special.log_ndtr(a) - log_b).clamp(max=-torch.finfo(log_b.dtype).tiny)  # < 0: a < b
    return log_b + log1mexp(d)


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) elementwise: N(mean, exp(log_scale)^2) integrated over x's bin (Ho et al. eq. 13).

    ``x`` lies on the 256-level grid of [-1, 1]; the end bins reach to -inf and
    +inf. Computed in float64 and in log space (:func:`log_normal_interval`),
    so a pixel far from the model's mean costs what eq. 13 says (about 48 nats
    at 10 sigma), with a finite gradient in ``mean`` and ``log_scale``.
    """
    x, mean, log_scale = x.double(), mean.double(), log_scale.double()
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + HALF_BIN) * inv_std
    lower = (x - mean - HALF_BIN) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)  # x = -1: P(X <= -1 + 1/255)
    log_sf_lower = torch.special.log_ndtr(-lower)  # x = +1: P(X >= 1 - 1/255)
    log_mid = log_normal_interval(lower, upper)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mid))


def vlb_term(diffusion: Diffusion, x0: Tensor, x_t: Tensor, t: Tensor, model_mean: Tensor,
             model_log_var: Tensor) -> Tensor:
    """Per-example term of the bound at 0-based ``t``, in bits per dimension.

    KL(q(x_{t-1} | x_t, x_0) || N(model_mean, exp(model_log_var))) averaged
    over the dimensions for ``t >= 1`` (eqs. 6-8); at ``t = 0`` the decoder's
    -log p(x_0 | x_1) with the discretised Gaussian (eq. 13). Differentiable in
    ``model_mean`` and ``model_log_var`` (the decoder in float64).
    """
    true_mean, _, true_log_var = diffusion.q_posterior(x0, x_t, t)
    kl = normal_kl(true_mean, true_log_var, model_mean, model_log_var).flatten(1).mean(1)
    decoder = t == 0
    if bool(decoder.any()):
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var).flatten(1).mean(1)
        kl = torch.where(decoder, nll.to(kl.dtype), kl)
    return kl / LN2
