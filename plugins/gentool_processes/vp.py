"""``vp``: the discrete variance-preserving chain of Ho et al. (2020) over the betas of the recipe's ``[schedule]``."""

from __future__ import annotations

from torch import Tensor

from gentool import Diffusion


def vp(*, betas: Tensor) -> Diffusion:
    """The discrete DDPM chain: x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps at integer steps t.

    Its betas come from the recipe's ``[schedule]`` (linear, cosine, sigmoid,
    ...; the core supplies them: ``betas`` is not a recipe option). Times are
    the 0-based steps ``0..T-1`` (Ho et al.'s ``t + 1``) with the data at -1;
    samplers stay on the trained steps, and the chain's posterior and
    variational bound serve the ancestral step, RePaint, learned variances and
    bits/dim.
    """
    return Diffusion(betas)
