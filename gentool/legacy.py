"""Samplers written for gentool before the noise process became a component keep working on the discrete chain.

Such a sampler is ``sampler(eps_fn, diffusion, x_T, *, steps, t_start,
generator, callback, **options)``: it takes a noise prediction
``eps_fn(x_t, t)`` of integer timesteps and a :class:`gentool.Diffusion`.
:func:`adapt` wraps it into today's convention (``denoise``, ``process``),
:func:`legacy_eps_fn` gives it the ``eps_fn`` it expects, with the two
attributes it may read (``eps_fn.eps_and_x0`` for a v or x0 model and
``eps_fn.variance_v`` after each call for a learned variance). It runs only on
the discrete chain; :mod:`gentool.compat` refuses it elsewhere.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from torch import Tensor

#: The positional parameters of a sampler written for the discrete chain's ``eps_fn``.
LEGACY_POSITIONAL = ("eps_fn", "diffusion", "x_T")


def is_legacy_sampler(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` takes ``(eps_fn, diffusion, x_T, ...)`` rather than ``(denoise, process, x_T, ...)``."""
    try:
        params = list(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return False
    return tuple(params[:3]) == LEGACY_POSITIONAL


def legacy_eps_fn(denoise: Callable[[Tensor, Any], Any], process: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """``eps_fn(x_t, t) -> eps`` over ``denoise``, with ``eps_and_x0`` and ``variance_v`` as earlier versions had."""

    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        d = denoise(x_t, t)
        eps_fn.variance_v = d.extras.get("variance_v")
        return d.eps

    def eps_and_x0(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        d = denoise(x_t, t)
        eps_fn.variance_v = d.extras.get("variance_v")
        return d.eps, d.x0

    eps_fn.variance_v = None
    eps_fn.eps_and_x0 = eps_and_x0
    return eps_fn


def adapt(sampler: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``sampler`` in today's convention: ``adapt(old)(denoise, process, x_T, **kw) = old(eps_fn, process, x_T, **kw)``."""
    if not is_legacy_sampler(sampler):
        return sampler

    @functools.wraps(sampler)
    def wrapped(denoise, process, x_T, **kwargs):
        return sampler(legacy_eps_fn(denoise, process), process, x_T, **kwargs)

    return wrapped
