"""Bind a model, labels and guidance into the ``denoise(x_t, t) -> Denoised`` every sampler takes.

:func:`make_denoise_fn` is the reference; :func:`make_fast_denoise_fn` is the
same function with the network call prepared for fixed-shape reverse loops on
a GPU. Both are :func:`_denoise_from` around a different network call, so the
guidance batch, the conversion through the parameterisation and the guidance
mix are written once. :func:`resolve_sampling` is the one rule for labels and
the guidance weight; :mod:`gentool.sampler_service` resolves a whole request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from gentool.devices import compile_backend, compile_default
from gentool.errors import UsageError
from gentool.model import DiffusionModel
from gentool.parameterisation import VARIANCE, Denoised, Parameterisation, guided_eps  # noqa: F401 - re-exported
from gentool.process import Process, Time, as_batch, broadcast
from gentool.reverse import DenoiseFn, karras_sigma
from gentool.vlb import split_output


@dataclass(frozen=True)
class Guidance:
    """How the conditional and unconditional predictions are mixed.

    Attributes:
        w: the classifier-free guidance weight (Ho and Salimans 2022, eq. 6; 0: none).
        interval: guide only where Karras' noise level sigma(t) / alpha(t) lies in
            ``(lo, hi]`` (Kynkaanniemi et al. 2024, eq. 6); elsewhere the conditional
            prediction alone is used (one network evaluation). ``None``: everywhere.
        rescale: CFG rescale phi (Lin et al. 2024, sec. 3.4, eq. 13-16) of the guided
            v prediction; 0: off (see :func:`rescaled`).
    """

    w: float = 0.0
    interval: tuple[float, float] | None = None
    rescale: float = 0.0

    def active(self, process: Process, t: Time) -> bool | Tensor:
        """Whether guidance applies at ``t``: a bool for a number, a bool tensor ``[B]`` for times ``[B]``."""
        if self.interval is None:
            return True
        lo, hi = self.interval
        if isinstance(t, Tensor):
            return torch.tensor([lo < karras_sigma(process, float(ti)) <= hi for ti in t.tolist()],
                                device=t.device)
        return lo < karras_sigma(process, t) <= hi


def resolve_sampling(model: DiffusionModel, labels: Tensor | list[int] | None, guidance: float | None, *,
                     default: float, label_free: bool = False) -> tuple[Tensor | None, float]:
    """The labels and the guidance weight w of one sampling call, by the one rule every caller follows.

    :meth:`gentool.Run.sample`, :meth:`gentool.Run.denoise_fn` (so every task),
    ``gentool sample``, ``gentool eval`` and the task commands all come here:

    * ``guidance`` ``None`` means ``default`` (the recipe's ``[sampler] guidance``);
      w must be a finite number;
    * ``labels`` are class indices (``-1``: the null label), checked on the
      host against the model; an unconditional model takes none;
    * an unconditional model refuses w != 0: there is no conditional
      prediction to guide towards;
    * a conditional model without labels samples the null label, unguided (w = 0);
    * ``label_free`` guidance (autoguidance, :mod:`gentool.autoguidance`) needs
      no labels: w is kept for an unconditional model and for the null label.

    Returns the labels (int64, on the CPU) and w; raises
    :class:`~gentool.errors.UsageError` for a refused combination.
    """
    w = default if guidance is None else guidance
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise UsageError(f"guidance {w!r} is not valid: expected a finite number (0: plain conditional sampling)")
    if model.conditioner is None:
        if labels is not None:
            raise UsageError("class labels given, but the model is unconditional (its recipe has no [conditioner])")
        if w != 0 and not label_free:
            raise UsageError(f"guidance w = {w:g} needs a class-conditional model, but this one is unconditional "
                             "(its recipe has no [conditioner]); use guidance 0")
        return None, float(w) if label_free else 0.0
    if labels is None:
        return None, float(w) if label_free else 0.0
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    model.check_labels(labels)
    return labels, float(w)


def _uses_guidance(model: DiffusionModel, labels: Tensor | None, guidance: Guidance) -> bool:
    """Guidance needs a weight, labels to guide towards and a conditioner that knows the null label."""
    return guidance.w != 0.0 and labels is not None and model.conditioner is not None


def _halves(d: Denoised) -> tuple[Denoised, Denoised]:
    """A record of a doubled batch as its two halves (extras: each half's)."""
    x0, eps = d.x0.chunk(2), d.eps.chunk(2)
    extras = [{k: v.chunk(2)[i] for k, v in d.extras.items()} for i in (0, 1)]
    return Denoised(x0[0], eps[0], extras[0]), Denoised(x0[1], eps[1], extras[1])


def rescaled(process: Process, x: Tensor, t: Time, guided: Denoised, cond: Denoised, phi: float) -> Denoised:
    """CFG rescale (Lin et al. 2024, sec. 3.4): the guided v prediction brought back towards the conditional one's std.

    Lin et al. rescale their v-prediction model's output, v = alpha eps - sigma x0
    (Salimans and Ho 2022): with v_cfg the guided and v_pos the conditional
    prediction, eq. 14-16 are sigma_pos = std(v_pos), sigma_cfg = std(v_cfg) per
    image, v_rescaled = v_cfg sigma_pos / sigma_cfg and
    v_final = phi v_rescaled + (1 - phi) v_cfg. The record is rebuilt from v_final
    and x_t, so x_t = alpha x0 + sigma eps still holds:
    x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2), eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2).
    The v of a model with another parameterisation is the same quantity computed from its x0 and eps.
    """
    alpha, sigma = broadcast(process.alpha(t), x), broadcast(process.sigma(t), x)
    v_cfg = alpha * guided.eps - sigma * guided.x0
    v_pos = alpha * cond.eps - sigma * cond.x0
    dims = tuple(range(1, x.ndim))
    factor = v_pos.std(dim=dims, keepdim=True) / v_cfg.std(dim=dims, keepdim=True).clamp(min=1e-12)
    v = phi * v_cfg * factor + (1 - phi) * v_cfg  # eq. 15-16
    norm = alpha**2 + sigma**2
    return Denoised((alpha * x - sigma * v) / norm, (sigma * x + alpha * v) / norm, guided.extras)


def _select(mask: Tensor, a: Denoised, b: Denoised) -> Denoised:
    """Per example: ``a`` where ``mask``, else ``b`` (extras: ``b``'s)."""
    m = mask.reshape(-1, *[1] * (a.x0.ndim - 1))
    return Denoised(torch.where(m, a.x0, b.x0), torch.where(m, a.eps, b.eps), b.extras)


def _denoise_from(net: Callable[[Tensor, Tensor, bool], Tensor], model: DiffusionModel, process: Process,
                  guidance: Guidance, guided: bool) -> DenoiseFn:
    """``denoise(x_t, t)`` from ``net(x, t, doubled)``, the network's raw output for a batch.

    ``guided``: where guidance is active, ``net`` is called once on the batch
    twice over (``2B`` rows: the labels, then the null label) and the two
    records are mixed by the parameterisation's ``guide``. Whatever the
    network predicts becomes a :class:`Denoised` through the model's
    parameterisation; a learned variance rides along as ``extras["variance_v"]``
    (the conditional half's when guided).
    """
    param: Parameterisation = model.parameterisation
    learned = model.learned_variance

    def record(x: Tensor, tt: Tensor, t: Time, doubled: bool) -> Denoised:
        out, v = split_output(net(x, tt, doubled).float(), learned)
        d = param.denoised(process, x, t, out)
        if v is not None:
            d.extras[VARIANCE] = v
        return d

    def denoise(x_t: Tensor, t: Time) -> Denoised:
        tt = as_batch(x_t, t, process)
        active = guidance.active(process, t) if guided else False
        if not bool(active if not isinstance(active, Tensor) else active.any()):
            return record(x_t, tt, t, False)  # outside the interval: the conditional prediction, one evaluation
        t2 = torch.cat([t, t]) if isinstance(t, Tensor) else t
        cond, uncond = _halves(record(torch.cat([x_t, x_t]), torch.cat([tt, tt]), t2, True))
        out = param.guide(process, x_t, t, cond, uncond, guidance.w)
        if guidance.rescale:
            out = rescaled(process, x_t, t, out, cond, guidance.rescale)
        return _select(active, out, cond) if isinstance(active, Tensor) else out

    return denoise


def _with_null(labels: Tensor | None, doubled: bool) -> Tensor | None:
    """The labels of a guided batch: ``labels`` then as many null labels (``-1``)."""
    return torch.cat([labels, torch.full_like(labels, -1)]) if doubled else labels


def _as_guidance(guidance: float | Guidance) -> Guidance:
    return guidance if isinstance(guidance, Guidance) else Guidance(float(guidance))


def make_denoise_fn(model: DiffusionModel, process: Process, labels: Tensor | None = None,
                    guidance: float | Guidance = 0.0) -> DenoiseFn:
    """The sampling model as ``denoise(x_t, t) -> Denoised`` with labels and guidance bound.

    With guidance (w != 0 and labels given), the conditional and the
    unconditional halves go through the network as one batch of ``2B``.
    Whatever the denoiser predicts is converted by the model's
    parameterisation. No labels means the unconditional prediction (the null
    label), unguided. ``t`` is a number (the whole batch) or a tensor ``[B]``.
    """
    from gentool.parameterisation import call_network

    guidance = _as_guidance(guidance)
    guided = _uses_guidance(model, labels, guidance)
    at = call_network(model, process, model.parameterisation)
    labels2 = _with_null(labels, guided)
    return _denoise_from(lambda x, t, doubled: at(x, t, labels2 if doubled else labels), model, process,
                         guidance, guided)


def make_fast_denoise_fn(
    model: DiffusionModel,
    process: Process,
    labels: Tensor | None = None,
    guidance: float | Guidance = 0.0,
    *,
    bf16: bool | None = None,
    compile: bool | str = "auto",
    channels_last: bool = True,
    mode: str = "reduce-overhead",
    backend: str | None = None,
) -> DenoiseFn:
    """:func:`make_denoise_fn` for a fixed-shape reverse loop.

    Same contract and the same maths (the shared :func:`_denoise_from`); the
    differences are speed only:

    * the conditioning embeddings of ``labels`` and of the null label are
      computed once, not per step (the model must be in eval mode);
    * the network call (with the parameterisation's inputs) is compiled,
      captured as a CUDA graph with ``mode="reduce-overhead"`` (every call must
      have the same batch), its output copied out of the graph's memory;
    * the network runs under bf16 autocast (default: on CUDA) on
      channels-last inputs; its output comes back float32.
    """
    if model.training:
        raise ValueError("make_fast_denoise_fn embeds the labels once, so the model must be in eval mode (model.eval())")
    guidance = _as_guidance(guidance)
    device = next(model.parameters()).device
    bf16 = device.type == "cuda" if bf16 is None else bf16
    compiled = compile_default(compile, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # layout only; values unchanged
    guided = _uses_guidance(model, labels, guidance)
    param = model.parameterisation
    with torch.no_grad():  # one null embedding serves an unlabelled batch of any size
        conds = {False: model.embed(labels, 1, device), True: model.embed(_with_null(labels, guided), 1, device)}

    def forward(x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        x_in, c_noise = param.inputs(process, x, t)
        if channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            return model.denoiser(x_in, c_noise, cond).float()

    call = torch.compile(forward, mode=mode if device.type == "cuda" else None, backend=compile_backend(backend),
                         dynamic=False) if compiled else forward

    @torch.no_grad()  # no_grad, not inference_mode: samplers may update the returned tensors in place
    def net(x: Tensor, t: Tensor, doubled: bool) -> Tensor:
        c = conds[doubled]
        if c is not None and c.shape[0] != x.shape[0]:
            c = c.expand(x.shape[0], -1)
        if device.type == "cuda" and compiled:
            torch.compiler.cudagraph_mark_step_begin()
        return call(x, t, c).clone(memory_format=torch.contiguous_format)

    return torch.no_grad()(_denoise_from(net, model, process, guidance, guided))


def make_eps_fn(model: DiffusionModel, process: Process, labels: Tensor | None = None,
                guidance: float | Guidance = 0.0):
    """The ``eps_fn(x_t, t)`` of earlier gentool versions over :func:`make_denoise_fn` (see :mod:`gentool.legacy`)."""
    from gentool.legacy import legacy_eps_fn

    return legacy_eps_fn(make_denoise_fn(model, process, labels, guidance), process)


__all__ = ["Guidance", "guided_eps", "make_denoise_fn", "make_eps_fn", "make_fast_denoise_fn", "resolve_sampling"]
