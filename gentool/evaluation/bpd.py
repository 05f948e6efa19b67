"""Bits per dimension: the variational bound of Ho et al. (2020), eq. 5.

In the paper's 1-based time, -log p(x_0) <= L = L_T + sum_{t=2..T} L_{t-1} + L_0 with

* L_T     = KL(q(x_T | x_0) || N(0, I)), the prior term;
* L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)), Gaussian KLs (eqs. 6-8);
* L_0     = -log p(x_0 | x_1), the discretised Gaussian decoder (sec. 3.3, eq. 13).

In gentool's 0-based time the term at ``t = 0`` is the decoder and ``t = 1..T-1``
are the KLs. Everything is in bits per dimension: nats / (D ln 2) with
D = C * H * W, as improved-diffusion reports it. The reverse variance is fixed
as in improved-diffusion: ``"beta"`` (sigma_t^2 = beta_t, with beta-tilde_2 at the
decoder step) or ``"beta_tilde"`` (the posterior variance, log clipped); a model
with a learned variance (Nichol and Dhariwal 2021) uses its own, which its
``denoise`` record carries (``extras["variance_v"]``). The bound is the
discrete chain's: ``gentool check`` refuses ``bpd`` for other processes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from gentool.diffusion import Diffusion, extract, normal_kl
from gentool.interfaces import DenoiseFn
from gentool.parameterisation import VARIANCE
from gentool.vlb import HALF_BIN, LN2, discretized_gaussian_log_likelihood, learned_log_variance, vlb_term

__all__ = ["HALF_BIN", "LN2", "bits_per_dim", "discretized_gaussian_log_likelihood", "model_log_variance",
           "prior_bpd", "term_bpd"]


def model_log_variance(diffusion: Diffusion, variance: Literal["beta", "beta_tilde"]) -> Tensor:
    """log sigma_t^2 for every t (improved-diffusion's "fixedlarge" / "fixedsmall")."""
    if diffusion.num_timesteps < 2:
        raise ValueError("bits/dim needs at least 2 timesteps")
    if variance == "beta":
        return torch.log(torch.cat([diffusion.posterior_variance[1:2], diffusion.betas[1:]]))
    if variance == "beta_tilde":
        return diffusion.posterior_log_variance_clipped
    raise ValueError(f"unknown variance {variance!r}; valid: beta, beta_tilde")


def term_bpd(denoise: DenoiseFn, diffusion: Diffusion, x0: Tensor, t: Tensor, noise: Tensor, *,
             variance: Literal["beta", "beta_tilde"] = "beta", clip_denoised: bool = False) -> Tensor:
    """Per-image bits/dim of the term at 0-based ``t``: L_{t} KL for t >= 1, decoder L_0 at t = 0.

    ``variance`` is ignored where the model has a learned variance.
    """
    x_t = diffusion.q_sample(x0, t, noise)
    d = denoise(x_t, t)  # a v or x0 model's own x0: finite where abar_t = 0
    x0_hat = d.x0.float()
    v = d.extras.get(VARIANCE)
    if clip_denoised:
        x0_hat = x0_hat.clamp(-1, 1)
    model_mean, _, _ = diffusion.q_posterior(x0_hat, x_t, t)  # eq. 11 as the posterior mean at x0_hat
    if v is not None:  # Nichol and Dhariwal 2021, eq. 15
        model_log_var = learned_log_variance(diffusion, v, t)
    else:
        model_log_var = extract(model_log_variance(diffusion, variance), t, x0.ndim)
    return vlb_term(diffusion, x0, x_t, t, model_mean, model_log_var)  # KLs (eqs. 6-8), decoder L_0 (eq. 13)


def prior_bpd(diffusion: Diffusion, x0: Tensor) -> Tensor:
    """Per-image L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim."""
    t = torch.full((x0.shape[0],), diffusion.num_timesteps - 1, dtype=torch.long, device=x0.device)
    mean, var = diffusion.q_mean_variance(x0, t)
    zero = torch.zeros_like(mean)
    return normal_kl(mean, torch.log(var), zero, zero).flatten(1).mean(1) / LN2


@torch.no_grad()
def bits_per_dim(denoise: DenoiseFn, diffusion: Diffusion, x0: Tensor, *, timesteps: int = 0,
                 variance: Literal["beta", "beta_tilde"] = "beta", clip_denoised: bool = False,
                 generator: torch.Generator | None = None, callback=None) -> dict[str, Tensor]:
    """Per-image upper bound on -log2 p(x_0) / D: ``{"bpd", "prior", "decoder", "vb"}``.

    ``timesteps = 0`` (or >= T - 1) sums every KL term exactly. ``timesteps = K``
    draws, for each image, K of the T - 1 KL terms uniformly without
    replacement and weights their sum by (T - 1) / K: an unbiased estimate of
    the full sum. The prior and decoder terms are always exact. ``callback()``
    is called after each network evaluation (for a progress bar).
    """
    T, B = diffusion.num_timesteps, x0.shape[0]

    def term(t: Tensor) -> Tensor:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        out = term_bpd(denoise, diffusion, x0, t, noise, variance=variance, clip_denoised=clip_denoised)
        if callback is not None:
            callback()
        return out

    decoder = term(torch.zeros(B, dtype=torch.long, device=x0.device))
    if timesteps <= 0 or timesteps >= T - 1:
        columns, weight = torch.arange(1, T, device=x0.device).expand(B, -1), 1.0
    else:
        order = torch.rand((B, T - 1), generator=generator, device=x0.device).argsort(dim=1)
        columns, weight = order[:, :timesteps] + 1, (T - 1) / timesteps
    vb = sum((term(columns[:, k]) for k in range(columns.shape[1])), torch.zeros(B, device=x0.device)) * weight
    prior = prior_bpd(diffusion, x0)
    return {"bpd": prior + vb + decoder, "prior": prior, "decoder": decoder, "vb": vb}
