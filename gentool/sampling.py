"""Bind a model, labels and guidance into the ``eps_fn`` every sampler takes.

:func:`make_eps_fn` is the reference; :func:`make_fast_eps_fn` is the same
function for fixed-shape reverse loops on a GPU. Both are :func:`_eps_from`
around a different network call, so the guidance batch, the conversion to
eps and the guidance mix are written once.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from gentool.devices import compile_backend, compile_default
from gentool.diffusion import Diffusion
from gentool.errors import UsageError
from gentool.interfaces import EpsFn
from gentool.model import DiffusionModel
from gentool.vlb import VARIANCE_ATTR, split_output


def guided_eps(eps_cond: Tensor, eps_uncond: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance (Ho and Salimans 2022, eq. 6).

    eps~ = (1 + w) eps(x, c) - w eps(x, null). In the other common form,
    eps~ = eps(x, null) + s (eps(x, c) - eps(x, null)) with s = 1 + w, so
    w = 0 (s = 1) is plain conditional sampling.
    """
    return (1.0 + guidance) * eps_cond - guidance * eps_uncond


def resolve_sampling(model: DiffusionModel, labels: Tensor | list[int] | None, guidance: float | None, *,
                     default: float) -> tuple[Tensor | None, float]:
    """The labels and the guidance weight w of one sampling call, by the one rule every caller follows.

    :meth:`gentool.Run.sample`, :meth:`gentool.Run.eps_fn` (so every task),
    ``gentool sample``, ``gentool eval`` and the task commands all come here:

    * ``guidance`` ``None`` means ``default`` (the recipe's ``[sampler] guidance``);
      w must be a finite number;
    * ``labels`` are class indices (``-1``: the null label), checked on the
      host against the model; an unconditional model takes none;
    * an unconditional model refuses w != 0: there is no conditional
      prediction to guide towards;
    * a conditional model without labels samples the null label, unguided (w = 0).

    Returns the labels (int64, on the CPU) and w; raises
    :class:`~gentool.errors.UsageError` for a refused combination.
    """
    w = default if guidance is None else guidance
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise UsageError(f"guidance {w!r} is not valid: expected a finite number (0: plain conditional sampling)")
    if model.conditioner is None:
        if labels is not None:
            raise UsageError("class labels given, but the model is unconditional (its recipe has no [conditioner])")
        if w != 0:
            raise UsageError(f"guidance w = {w:g} needs a class-conditional model, but this one is unconditional "
                             "(its recipe has no [conditioner]); use guidance 0")
        return None, 0.0
    if labels is None:
        return None, 0.0
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    model.check_labels(labels)
    return labels, float(w)


def _uses_guidance(model: DiffusionModel, labels: Tensor | None, guidance: float) -> bool:
    """Guidance needs a weight, labels to guide towards and a conditioner that knows the null label."""
    return guidance != 0.0 and labels is not None and model.conditioner is not None


def _eps_from(net: Callable[[Tensor, Tensor], Tensor], diffusion: Diffusion, prediction: str,
              guidance: float, guided: bool, learned_variance: bool = False) -> EpsFn:
    """``eps_fn(x_t, t)`` from ``net(x, t)``, the network's raw output for a batch.

    ``guided``: ``net`` is called once on the batch twice over (``2B`` rows:
    the labels, then the null label) and the two halves are mixed by
    :func:`guided_eps`. Whatever the network predicts (eps, x0, v) is
    converted to eps. ``learned_variance``: the output's last C channels are
    the variance interpolation v; each call leaves it (the conditional half's
    when guided) on ``eps_fn.variance_v`` for the samplers (:mod:`gentool.vlb`).
    """

    def output(x_in: Tensor, t_in: Tensor) -> Tensor:
        out, v = split_output(net(x_in, t_in).float(), learned_variance)
        if v is not None:
            setattr(eps_fn, VARIANCE_ATTR, v.chunk(2)[0] if guided else v)
        return out

    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        x_in, t_in = (torch.cat([x_t, x_t]), torch.cat([t, t])) if guided else (x_t, t)
        eps = diffusion.to_eps(output(x_in, t_in), x_in, t_in, prediction)
        if not guided:
            return eps
        eps_cond, eps_uncond = eps.chunk(2)
        return guided_eps(eps_cond, eps_uncond, guidance)

    def eps_and_x0(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        x_in, t_in = (torch.cat([x_t, x_t]), torch.cat([t, t])) if guided else (x_t, t)
        eps, x0 = diffusion.eps_and_x0(output(x_in, t_in), x_in, t_in, prediction)
        if not guided:
            return eps, x0
        return guided_eps(*eps.chunk(2), guidance), guided_eps(*x0.chunk(2), guidance)  # both affine in the output

    if prediction != "eps":  # zero terminal SNR: samplers take x0 from the v/x0 output where abar_t = 0
        eps_fn.eps_and_x0 = eps_and_x0
    return eps_fn


def _with_null(labels: Tensor | None, guided: bool) -> Tensor | None:
    """The labels of a guided batch: ``labels`` then as many null labels (``-1``)."""
    return torch.cat([labels, torch.full_like(labels, -1)]) if guided else labels


def make_eps_fn(
    model: DiffusionModel,
    diffusion: Diffusion,
    labels: Tensor | None = None,
    guidance: float = 0.0,
) -> EpsFn:
    """The noise prediction ``eps_fn(x_t, t)`` with labels and guidance bound.

    With ``guidance != 0`` and labels given, the conditional and the
    unconditional halves go through the network as one batch of ``2B``.
    Whatever the denoiser predicts (eps, x0, v) is converted to eps. No labels
    means the unconditional prediction (the null label), unguided.
    """
    guided = _uses_guidance(model, labels, guidance)
    batch_labels = _with_null(labels, guided)
    return _eps_from(lambda x, t: model(x, t, batch_labels), diffusion, model.prediction, guidance, guided,
                     model.learned_variance)


def make_fast_eps_fn(
    model: DiffusionModel,
    diffusion: Diffusion,
    labels: Tensor | None = None,
    guidance: float = 0.0,
    *,
    bf16: bool | None = None,
    compile: bool | str = "auto",
    channels_last: bool = True,
    mode: str = "reduce-overhead",
    backend: str | None = None,
) -> EpsFn:
    """:func:`make_eps_fn` for a fixed-shape reverse loop.

    Same contract and the same maths (the shared :func:`_eps_from`); the
    differences are speed only:

    * the conditioning embeddings of ``labels`` and of the null label are
      computed once, not per step (the model must be in eval mode);
    * ``cat``, the network, the conversion to eps and the guidance mix are
      one compiled function, captured as a CUDA graph with
      ``mode="reduce-overhead"`` (every call must have the same batch);
    * the network runs under bf16 autocast (default: on CUDA) on
      channels-last inputs; eps comes back float32.

    The returned tensor is a fresh copy (CUDA-graph outputs are overwritten by
    the next replay, and multistep samplers keep old eps). A model with a
    learned variance runs uncompiled (its ``eps_fn.variance_v`` is set per call).
    """
    if model.training:
        raise ValueError("make_fast_eps_fn embeds the labels once, so the model must be in eval mode (model.eval())")
    device = next(model.parameters()).device
    bf16 = device.type == "cuda" if bf16 is None else bf16
    learned = model.learned_variance
    compiled = compile_default(compile, device) and not learned
    if channels_last:
        model.to(memory_format=torch.channels_last)  # layout only; values unchanged
    guided = _uses_guidance(model, labels, guidance)
    with torch.no_grad():  # one null embedding serves an unlabelled batch of any size
        cond = model.embed(_with_null(labels, guided), 1, device)

    def net(x: Tensor, t: Tensor) -> Tensor:
        c = cond if cond is None or cond.shape[0] == x.shape[0] else cond.expand(x.shape[0], -1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            return model.denoiser(x, t, c)

    eps = inner = _eps_from(net, diffusion, model.prediction, guidance, guided, learned)
    eps_and_x0 = getattr(eps, "eps_and_x0", None)  # uncompiled: one step per run at most (abar_t = 0)
    if compiled:
        eps = torch.compile(eps, mode=mode if device.type == "cuda" else None, backend=compile_backend(backend),
                            dynamic=False)

    # no_grad, not inference_mode: samplers may update the returned tensor in place
    @torch.no_grad()
    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        if device.type == "cuda" and compiled:
            torch.compiler.cudagraph_mark_step_begin()
        return eps(x_t, t).clone(memory_format=torch.contiguous_format)

    if eps_and_x0 is not None:
        eps_fn.eps_and_x0 = torch.no_grad()(eps_and_x0)
    if learned:  # the samplers read the variance from the function they hold
        return _sharing_variance(eps_fn, inner)
    return eps_fn


def _sharing_variance(outer: EpsFn, inner: EpsFn) -> EpsFn:
    """``outer`` with ``variance_v`` (and ``eps_and_x0``) copied from ``inner`` after each call."""

    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        out = outer(x_t, t)
        setattr(eps_fn, VARIANCE_ATTR, getattr(inner, VARIANCE_ATTR))
        return out

    both = getattr(outer, "eps_and_x0", None)
    if both is not None:
        def eps_and_x0(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            out = both(x_t, t)
            setattr(eps_fn, VARIANCE_ATTR, getattr(inner, VARIANCE_ATTR))
            return out

        eps_fn.eps_and_x0 = eps_and_x0
    return eps_fn
