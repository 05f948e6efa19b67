"""Bind a model, labels and guidance into the ``eps_fn`` every sampler takes."""

from __future__ import annotations

import torch
from torch import Tensor

from gentool.diffusion import Diffusion
from gentool.interfaces import EpsFn
from gentool.model import DiffusionModel


def guided_eps(eps_cond: Tensor, eps_uncond: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance (Ho and Salimans 2022, eq. 6).

    eps~ = (1 + w) eps(x, c) - w eps(x, null). In the other common form,
    eps~ = eps(x, null) + s (eps(x, c) - eps(x, null)) with s = 1 + w, so
    w = 0 (s = 1) is plain conditional sampling.
    """
    return (1.0 + guidance) * eps_cond - guidance * eps_uncond


def make_eps_fn(
    model: DiffusionModel,
    diffusion: Diffusion,
    labels: Tensor | None = None,
    guidance: float = 0.0,
) -> EpsFn:
    """The noise prediction ``eps_fn(x_t, t)`` with labels and guidance bound.

    With ``guidance != 0`` and labels given, the conditional and the
    unconditional halves go through the network as one batch of ``2B``.
    Whatever the denoiser predicts (eps, x0, v) is converted to eps.
    """
    prediction = model.prediction
    use_cfg = guidance != 0.0 and labels is not None and model.conditioner is not None

    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        if not use_cfg:
            out = model(x_t, t, labels)
            return diffusion.to_eps(out.float(), x_t, t, prediction)
        null = torch.full_like(labels, -1)  # -1: the conditioner's null token
        x2, t2 = torch.cat([x_t, x_t]), torch.cat([t, t])
        out = model(x2, t2, torch.cat([labels, null]))
        eps_cond, eps_uncond = diffusion.to_eps(out.float(), x2, t2, prediction).chunk(2)
        return guided_eps(eps_cond, eps_uncond, guidance)

    return eps_fn
