"""Fast paths for CUDA: channels-last, bf16, torch.compile, CUDA graphs, data on the GPU.

Nothing here changes the maths. :func:`prepare_for_speed` wraps a
:class:`~gentool.model.DiffusionModel` so the denoiser runs channels-last and
(optionally) compiled, sharing the model's parameters; the optimiser, the EMA
and the checkpoints keep using the original module. :func:`make_fast_eps_fn` is
:func:`gentool.sampling.make_eps_fn` for fixed-shape reverse loops: the
conditioning is embedded once, the guidance batch is one forward pass, and the
whole ``eps_fn`` is compiled with ``mode="reduce-overhead"`` (CUDA graphs).
:func:`device_batches` serves a small data set that fits on the device without
a host round trip per step. ``tests/test_fast_path.py`` checks that the fast
path gives the plain path's loss and gradients.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from gentool.diffusion import Diffusion
from gentool.interfaces import EpsFn
from gentool.sampling import guided_eps

#: Dense bf16 tensor-core peak in TFLOP/s from the vendors' data sheets (no
#: sparsity), matched against ``torch.cuda.get_device_name()`` in order.
#: The issue's reference figures use 800, the H100's *measured* matmul peak.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H800", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by name, or ``None`` when unknown.

    ``GENTOOL_PEAK_TFLOPS`` overrides the table (e.g. a measured peak).
    """
    override = os.environ.get("GENTOOL_PEAK_TFLOPS")
    if override:
        return float(override)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


#: ``GENTOOL_COMPILE_BACKEND`` picks torch.compile's backend when none is given
#: (default inductor; "aot_eager" or "eager" help tell a compiler problem from a model problem).
COMPILE_BACKEND_ENV = "GENTOOL_COMPILE_BACKEND"


def compile_default(setting: bool | str, device: torch.device) -> bool:
    """Resolve ``[run] compile``: ``"auto"`` compiles on CUDA only (inductor on
    the CPU needs minutes of C++ compilation for a U-Net)."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


def compile_backend(backend: str | None = None) -> str:
    """``backend``, else ``$GENTOOL_COMPILE_BACKEND``, else ``"inductor"``."""
    return backend or os.environ.get(COMPILE_BACKEND_ENV) or "inductor"


class FastModel(nn.Module):
    """``model(x_t, t, labels)`` through a channels-last, optionally compiled denoiser.

    Holds the original :class:`~gentool.model.DiffusionModel` (same parameters,
    so an optimiser built on either trains both). The conditioner runs eagerly:
    its label dropout draws from torch's global RNG, whose saved state makes a
    resumed run exact; a compiled graph would draw from its own generator.
    """

    def __init__(self, model: nn.Module, denoiser: Callable[..., Tensor], channels_last: bool) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_denoiser", denoiser)  # compiled or plain; not registered twice
        self.channels_last = channels_last

    @property
    def prediction(self) -> str:
        return self.model.prediction

    @property
    def conditioner(self) -> nn.Module | None:
        return self.model.conditioner

    def forward(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        cond = None
        if self.model.conditioner is not None:
            if labels is None:
                labels = torch.full((x_t.shape[0],), -1, dtype=torch.long, device=x_t.device)
            cond = self.model.conditioner(labels)
        if self.channels_last and x_t.ndim == 4:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        out = self._denoiser(x_t, t, cond)
        return out.contiguous()  # the loss and samplers see ordinary strides


def compile_denoiser(denoiser: nn.Module, *, mode: str | None = None, backend: str | None = None,
                     fullgraph: bool = False) -> Callable[..., Tensor]:
    """``torch.compile`` the denoiser with fixed shapes (``dynamic=False``).

    ``mode``: ``None`` (default), ``"max-autotune-no-cudagraphs"`` (slower to
    compile, sometimes faster kernels) or ``"reduce-overhead"`` (CUDA graphs;
    for inference, see :func:`make_fast_eps_fn`). ``backend="aot_eager"``
    traces forward and backward without generating code (the tests use it).
    """
    return torch.compile(denoiser, mode=mode, backend=compile_backend(backend), dynamic=False, fullgraph=fullgraph)


def prepare_for_speed(
    model: nn.Module,
    device: torch.device | str,
    *,
    channels_last: bool = True,
    compile: bool | str = "auto",
    mode: str | None = None,
    backend: str | None = None,
) -> FastModel:
    """Put ``model`` on ``device`` in its fast form and return the wrapper to call.

    Moves the weights to ``device`` and, with ``channels_last``, converts every
    4-D weight to the channels-last layout in place (values unchanged; a
    state dict saved afterwards loads anywhere). Turns on TF32 matmuls for any
    remaining fp32 work on CUDA. Use the returned :class:`FastModel` for the
    forward pass and ``model`` for the optimiser, EMA and checkpoints. The
    training engine (:mod:`gentool.engine.accel`) and ``gentool bench`` both
    go through here, so the bench times what ``gentool run`` trains.
    """
    device = torch.device(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv once
    denoiser = getattr(model, "denoiser", model)
    run = compile_denoiser(denoiser, mode=mode, backend=backend) if compile_default(compile, device) else denoiser
    return FastModel(model, run, channels_last)


def make_fast_eps_fn(
    model: nn.Module,
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
    """:func:`gentool.sampling.make_eps_fn` for a fixed-shape reverse loop.

    Same contract and the same maths (eps~ = (1 + w) eps(x, c) - w eps(x, null),
    Ho and Salimans 2022 eq. 6); the differences are speed only:

    * the conditioning embeddings of ``labels`` and of the null label are
      computed once, not per step (the model must be in eval mode);
    * with guidance the two halves go through the denoiser as one batch of 2B,
      and ``cat``, the network, the conversion to eps and the guidance mix are
      one compiled function, captured as a CUDA graph with
      ``mode="reduce-overhead"`` (every call must have the same batch);
    * the network runs under bf16 autocast (default: on CUDA) on
      channels-last inputs; eps comes back float32.

    The returned tensor is a fresh copy (CUDA-graph outputs are overwritten by
    the next replay, and multistep samplers keep old eps).
    """
    if model.training:
        raise ValueError("make_fast_eps_fn embeds the labels once, so the model must be in eval mode (model.eval())")
    device = next(model.parameters()).device
    bf16 = device.type == "cuda" if bf16 is None else bf16
    if channels_last:
        model.to(memory_format=torch.channels_last)  # layout only; values unchanged
    denoiser = getattr(model, "denoiser", model)
    conditioner = getattr(model, "conditioner", None)
    prediction = getattr(model, "prediction", "eps")
    use_cfg = guidance != 0.0 and labels is not None and conditioner is not None
    cond = None
    if conditioner is not None:
        with torch.no_grad():
            lab = labels if labels is not None else torch.full((1,), -1, dtype=torch.long, device=device)
            if use_cfg:
                lab = torch.cat([lab, torch.full_like(lab, -1)])
            cond = conditioner(lab)

    def eps(x_t: Tensor, t: Tensor) -> Tensor:
        x_in, t_in, c = x_t, t, cond
        if use_cfg:
            x_in, t_in = torch.cat([x_t, x_t]), torch.cat([t, t])
        if c is not None and c.shape[0] != x_in.shape[0]:
            c = c.expand(x_in.shape[0], -1)  # one null embedding for an unlabelled batch
        if channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = denoiser(x_in, t_in, c)
        e = diffusion.to_eps(out.float(), x_in.float(), t_in, prediction)
        if not use_cfg:
            return e
        eps_cond, eps_uncond = e.chunk(2)
        return guided_eps(eps_cond, eps_uncond, guidance)

    if compile_default(compile, device):
        eps = torch.compile(eps, mode=mode if device.type == "cuda" else None, backend=compile_backend(backend),
                            dynamic=False)

    # no_grad, not inference_mode: samplers may update the returned tensor in place
    @torch.no_grad()
    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        if device.type == "cuda" and compile_default(compile, device):
            torch.compiler.cudagraph_mark_step_begin()
        return eps(x_t, t).clone(memory_format=torch.contiguous_format)

    return eps_fn


def device_batches(
    dataset: Any,
    batch_size: int,
    *,
    seed: int,
    device: torch.device | str,
    start_step: int = 0,
    rank: int = 0,
    world: int = 1,
    max_bytes: int | None = None,
) -> Iterator[tuple[Tensor, Tensor]] | None:
    """Endless ``(images, labels)`` batches gathered on ``device`` from a copy held there.

    For data sets that fit (Fashion-MNIST: 47 MB, CIFAR-10: 154 MB as uint8):
    the images go to the device once, as stored (uint8 stays uint8), and each
    step is one index gather, with no worker processes, pinned buffers or
    host-to-device copy. The order is exactly that of
    :func:`gentool.engine.data.step_loader` (epoch ``e`` is ``randperm(n)``
    seeded ``seed + e``; step ``k`` takes batch ``k mod (n // batch_size)``;
    rank ``r`` of ``world`` takes the ``r``-th slice of that global batch).
    Random flips, when the data set asks for them, are drawn on the device
    from a generator seeded by ``(seed, step)``: the loader's distribution, not
    its draws, and a function of the step alone, so a resumed run flips
    exactly as an uninterrupted one.

    Returns ``None`` when the data set is not an in-memory image tensor
    (``.images``, ``.labels``), needs per-item resizing, or is larger than
    ``max_bytes`` (default: a quarter of the free device memory on CUDA).
    """
    device = torch.device(device)
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor) or images.ndim != 4:
        return None
    size = getattr(dataset, "image_size", None)
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        return None
    if max_bytes is None:
        max_bytes = torch.cuda.mem_get_info(device)[0] // 4 if device.type == "cuda" else 1 << 62
    if images.numel() * images.element_size() > max_bytes:
        return None
    from gentool.engine.data import StepBatchSampler  # the loader's order (and its checks), not a copy of it

    sampler = StepBatchSampler(len(images), batch_size, seed=seed, start_step=start_step, rank=rank, world=world)
    return _gather(images.to(device), labels.to(device, torch.int64), sampler,
                   bool(getattr(dataset, "random_flip", False)))


def _gather(images: Tensor, labels: Tensor, sampler: Any, flip: bool) -> Iterator:
    flip_gen = torch.Generator(device=images.device) if flip else None
    epoch, perm = -1, None
    step = sampler.start_step
    while True:
        e, b = divmod(step, sampler.per_epoch)
        if e != epoch:  # the sampler's permutation, moved to the device once per epoch
            epoch, perm = e, sampler.permutation(e).to(images.device)
        idx = perm[b * sampler.batch_size : (b + 1) * sampler.batch_size][sampler.rows]
        x = images[idx]
        x = x.to(torch.float32) / 127.5 - 1.0 if x.dtype == torch.uint8 else x.to(torch.float32)
        if flip_gen is not None:  # drawn for the global batch, so the flips do not depend on the world size
            flip_gen.manual_seed(sampler.seed * 1_000_003 + step)  # sets a seed on the host: no device sync
            mask = (torch.rand(sampler.batch_size, device=x.device, generator=flip_gen) < 0.5)[sampler.rows]
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        yield x, labels[idx]
        step += 1
