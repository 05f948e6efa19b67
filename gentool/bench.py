"""``gentool bench``: training and sampling throughput of a recipe's network on this device.

Training is timed as whole optimiser steps (the loss of
:func:`gentool.engine.step.objective_loss` of the recipe's objective, backward, AdamW, fused on CUDA)
on a synthetic batch already on the device, so data loading is not timed;
sampling as denoiser evaluations per second through the ``eps_fn`` every
sampler calls, with the recipe's guidance (one fused forward pass of 2B
rows). Both run after warm-up (which includes any compilation), with
``torch.cuda.synchronize()`` around the timed loop and no host read-back
inside it. FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`
(2 FLOPs per multiply-add) with attention on the math kernel, so every
matmul is counted the same way on every device and for every model.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import resource
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gentool.process import Process, as_batch
from gentool.engine.step import objective_loss
from gentool.errors import UsageError
from gentool.devices import compile_default
from gentool.engine.accel import prepare_for_speed
from gentool.sampling import make_denoise_fn, make_fast_denoise_fn

CPU_MEMORY = "CPU: peak resident set of the whole process during the timed loop (polled from /proc every 5 ms)"
CUDA_MEMORY = "CUDA: torch.cuda.max_memory_allocated during the timed loop (tensors only, not the caching allocator's reserve)"


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


@dataclass
class BenchSettings:
    """How to benchmark; ``None`` means the default for the device (first value CPU, second CUDA).

    Args:
        batch: training images per step (default: the recipe's ``train.batch_size``).
        steps: timed training steps (3 / 50); also the timed sampling calls unless ``sample_steps``.
        warmup: untimed steps before timing, compilation included (1 / 10).
        compile: torch.compile (default: the recipe's ``[run] compile``; "auto" is CUDA only).
        compile_mode: torch.compile mode of the training forward and backward (default: the
            recipe's ``[run] compile_mode``; try "max-autotune-no-cudagraphs"). Sampling always
            uses "reduce-overhead" on CUDA.
        channels_last: channels-last weights and inputs (False / True).
        bf16: bf16 autocast (default: the recipe's ``train.precision``; "auto" is CUDA only).
        sample_batch: images per sampling call (``batch`` / 256); guidance doubles the rows.
        sample_steps: timed ``eps_fn`` calls (default: ``steps``).
        peak_tflops: the bf16 peak for the utilisation fraction (default: the table ``PEAK_BF16_TFLOPS``).
    """

    batch: int | None = None
    steps: int | None = None
    warmup: int | None = None
    compile: bool | None = None
    compile_mode: str | None = None
    channels_last: bool | None = None
    bf16: bool | None = None
    sample_batch: int | None = None
    sample_steps: int | None = None
    peak_tflops: float | None = None

    def resolved(self, run) -> "BenchSettings":
        cuda = run.device.type == "cuda"
        tr = run.recipe.train
        s = BenchSettings(**asdict(self))
        pick = lambda value, default: default if value is None else value  # noqa: E731 - 0 is a value, not a default
        s.batch = pick(s.batch, tr.batch_size)
        s.steps = pick(s.steps, 50 if cuda else 3)
        s.warmup = pick(s.warmup, 10 if cuda else 1)
        s.compile = pick(s.compile, compile_default(run.recipe.run.compile, run.device))
        s.compile_mode = pick(s.compile_mode, run.recipe.run.torch_compile_mode)
        s.channels_last = pick(s.channels_last, cuda)
        s.bf16 = pick(s.bf16, tr.bf16_on(run.device))
        s.sample_batch = pick(s.sample_batch, 256 if cuda else s.batch)
        s.sample_steps = pick(s.sample_steps, s.steps)
        for name in ("batch", "steps", "sample_batch", "sample_steps"):
            if getattr(s, name) < 1:
                raise UsageError(f"bench: {name.replace('_', '-')} must be at least 1, got {getattr(s, name)}")
        if s.warmup < 0:
            raise UsageError(f"bench: warmup must be 0 or more, got {s.warmup}")
        return s


# -- measuring ----------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    """The process's resident set now (Linux ``/proc``; elsewhere its lifetime peak)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class _RssPeak(threading.Thread):
    """Polls the resident set every few milliseconds and keeps the largest value."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self.done = interval, _rss_mb(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, _rss_mb())

    def stop(self) -> float:
        self.done.set()
        self.join()
        return max(self.peak, _rss_mb())


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """Yields a dict whose ``"mb"`` is filled in with the peak memory of the block (see CPU_MEMORY, CUDA_MEMORY)."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    poll = _RssPeak()
    poll.start()
    try:
        yield out
    finally:
        out["mb"] = poll.stop()


def timed(fn: Callable[[], Any], steps: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Seconds for ``warmup`` untimed then ``steps`` timed calls of ``fn``, and the timed loop's peak memory."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    synchronize(device)
    warm = time.perf_counter() - t0
    with peak_memory(device) as mem:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        synchronize(device)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "warmup_s": warm, "peak_mem_mb": mem["mb"]}


def count_flops(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """FLOPs of the denoiser for one image: a forward pass (eval mode), and forward + backward.

    Counted on a copy on the meta device (shapes only, no arithmetic), with
    the conditioning embedding as an input: the conditioner's table look-up
    has no FLOPs.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    net = copy.deepcopy(getattr(model, "denoiser", model)).to("meta")
    x = torch.empty((1, *shape), device="meta")
    t = torch.full((1,), 500, dtype=torch.long, device="meta")
    cond_dim = getattr(net, "cond_dim", None)
    cond = torch.empty((1, cond_dim), device="meta") if cond_dim else None
    with sdpa_kernel([SDPBackend.MATH]):
        net.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fwd:
            net(x, t, cond)
        net.train()
        with FlopCounterMode(display=False) as train:
            net(x, t, cond).float().square().mean().backward()
    return fwd.get_total_flops(), train.get_total_flops()


# -- the two timed workloads ----------------------------------------------------

def train_throughput(model: nn.Module, process: Process, shape: tuple[int, ...], labels: Tensor | None,
                     s: BenchSettings, device: torch.device, *, objective: Any, lr: float = 2e-4) -> dict[str, float]:
    """Images per second of whole optimiser steps (forward, backward, AdamW) at ``s.batch``."""
    fast = prepare_for_speed(model, device, channels_last=s.channels_last, compile=s.compile, mode=s.compile_mode)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True if device.type == "cuda" else None)
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand((s.batch, *shape), device=device, generator=gen) * 2 - 1
    model.train()

    def step() -> Tensor:
        value, _ = objective_loss(objective, fast, process, x0, labels, gen, autocast=s.bf16)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        return value.detach()  # no .item(): nothing waits for the device inside the loop

    r = timed(step, s.steps, s.warmup, device)
    del optimizer
    return {"train_img_per_s": s.batch * s.steps / r["seconds"], "train_step_ms": 1e3 * r["seconds"] / s.steps,
            "train_warmup_s": r["warmup_s"], "train_peak_mem_mb": r["peak_mem_mb"]}


def sample_throughput(model: nn.Module, process: Process, shape: tuple[int, ...], labels: Tensor | None,
                      guidance: float, s: BenchSettings, device: torch.device) -> dict[str, float]:
    """Denoiser evaluations (image rows through the network) per second through ``denoise``."""
    model.eval()
    cfg = guidance != 0.0 and labels is not None and getattr(model, "conditioner", None) is not None
    if s.compile or s.channels_last:
        denoise = make_fast_denoise_fn(model, process, labels, guidance, bf16=s.bf16, compile=s.compile,
                                       channels_last=s.channels_last)
    else:
        plain = make_denoise_fn(model, process, labels, guidance)

        def denoise(x_t: Tensor, t: Tensor):
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=s.bf16):
                return plain(x_t, t)

    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn((s.sample_batch, *shape), device=device, generator=gen)
    # walk down the times as a sampler does; the t tensors are made before timing
    ts = [as_batch(x, v, process) for v in process.grid(max(2, s.sample_steps))]
    calls = iter(range(1 << 62))

    def call() -> Tensor:
        return denoise(x, ts[next(calls) % len(ts)]).eps

    r = timed(call, s.sample_steps, s.warmup, device)
    rows = s.sample_batch * (2 if cfg else 1)
    return {"sample_evals_per_s": rows * s.sample_steps / r["seconds"],
            "sample_steps_per_s": s.sample_batch * s.sample_steps / r["seconds"],
            "sample_rows_per_call": rows, "guidance_fused": cfg,
            "sample_warmup_s": r["warmup_s"], "sample_peak_mem_mb": r["peak_mem_mb"]}


def bench_model(model: nn.Module, process: Process, shape: tuple[int, ...], labels: Tensor | None,
                guidance: float, s: BenchSettings, device: torch.device, *, sampler_steps: int,
                objective: Any, lr: float = 2e-4, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Parameters, FLOPs, training and sampling throughput of one model on ``device``."""
    model.to(device)
    out: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
    log("counting FLOPs")
    out["flops_per_img"], out["train_flops_per_img"] = count_flops(model, shape)
    train_labels = None if labels is None else labels[torch.arange(s.batch, device=device) % len(labels)]
    log(f"timing {s.steps} training steps at batch {s.batch} (after {s.warmup} warm-up)")
    out.update(train_throughput(model, process, shape, train_labels, s, device, objective=objective, lr=lr))
    sample_labels = None if labels is None else labels[torch.arange(s.sample_batch, device=device) % len(labels)]
    log(f"timing {s.sample_steps} denoiser calls at sample batch {s.sample_batch}")
    with torch.no_grad():
        out.update(sample_throughput(model, process, shape, sample_labels, guidance, s, device))
    out["sample_img_per_s"] = out["sample_steps_per_s"] / sampler_steps
    out["train_tflops"] = out["train_img_per_s"] * out["train_flops_per_img"] / 1e12
    out["sample_tflops"] = out["sample_evals_per_s"] * out["flops_per_img"] / 1e12
    if s.peak_tflops:
        out["train_peak_fraction"] = out["train_tflops"] / s.peak_tflops
        out["sample_peak_fraction"] = out["sample_tflops"] / s.peak_tflops
    return out


# -- a recipe, and the comparison with diffusers ----------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "CPU")
        name = f"{name} ({torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f})"
    return {"device": name, "device_type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
            "memory_measure": CUDA_MEMORY if device.type == "cuda" else CPU_MEMORY,
            "data": "synthetic batch already on the device (data loading is not timed)"}


def _cpuinfo() -> list[str]:
    with contextlib.suppress(OSError):
        return Path("/proc/cpuinfo").read_text().splitlines()
    return []


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_run(run, settings: BenchSettings | None = None, *, compare: str | None = None,
              diffusers_config: dict[str, Any] | None = None,
              log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Benchmark a built :class:`~gentool.run.Run` (its weights are trained by the timed steps).

    ``compare="diffusers"`` also times diffusers' UNet2DModel in the DDPM
    CIFAR-10 configuration with the same harness and settings, in this process,
    and reports the ratios gentool / diffusers.
    """
    if compare not in (None, "diffusers"):
        raise UsageError(f"--compare: unknown system {compare!r}; valid: diffusers")
    s = (settings or BenchSettings()).resolved(run)
    from gentool.bench_diffusers import diffusers_model

    theirs_model = diffusers_model(**(diffusers_config or {})) if compare == "diffusers" else None  # fail fast
    device = run.device
    env = environment(device)
    if s.peak_tflops is None and device.type == "cuda":
        s.peak_tflops = peak_bf16_tflops(env["device"])
    run.ema = None  # the EMA update is not part of the timed step; free its memory
    _free(device)
    n = run.model.num_classes
    labels = torch.arange(n, device=device) if n else None
    sampler_steps = len(run.process.grid(run.recipe.sampler.steps))
    tr = run.recipe.train
    result: dict[str, Any] = {"recipe": run.recipe.source, **env, **asdict(s), "sampler_steps": sampler_steps}
    result.update(bench_model(run.model, run.process, run.latent_shape, labels, run.recipe.sampler.guidance, s,
                              device, sampler_steps=sampler_steps, objective=run.objective, lr=tr.lr,
                              log=log))
    if theirs_model is not None:
        model = theirs_model
        _free(device)
        log("diffusers: UNet2DModel, DDPM CIFAR-10 configuration")
        # the same rows per forward pass as gentool's (fused) guidance batch
        ds = BenchSettings(**{**asdict(s), "sample_batch": result["sample_rows_per_call"]})
        shape = (model.denoiser.unet.config.in_channels, *(2 * (model.denoiser.unet.config.sample_size,)))
        theirs = bench_model(model, run.process, shape, None, 0.0, ds, device, sampler_steps=sampler_steps,
                             objective=run.objective, lr=tr.lr, log=lambda m: log(f"diffusers: {m}"))
        if result["guidance_fused"]:  # per image, the same work as gentool's: two rows per sampler step
            theirs["sample_steps_per_s"] = theirs["sample_evals_per_s"] / 2
            theirs["sample_img_per_s"] = theirs["sample_steps_per_s"] / sampler_steps
            theirs["sample_img_note"] = "counted as guided sampling: two network rows per image and step"
        same = abs(result["flops_per_img"] - theirs["flops_per_img"]) <= 0.01 * theirs["flops_per_img"]
        if not same:
            log(f"warning: the networks differ ({result['flops_per_img'] / 1e9:.2f} vs "
                f"{theirs['flops_per_img'] / 1e9:.2f} GFLOPs per image): the ratios compare different work; "
                "diffusers' network is the DDPM CIFAR-10 one, so compare with recipes/cifar_cfg.toml's network")
        result["compare"] = {"diffusers": theirs, "same_network": same,
                             "train_ratio": result["train_img_per_s"] / theirs["train_img_per_s"],
                             "sample_ratio": result["sample_evals_per_s"] / theirs["sample_evals_per_s"]}
    return result


def bench_recipe(path: str | Path, *, overrides: list[str] = (), device: str | None = None,
                 settings: BenchSettings | None = None, compare: str | None = None,
                 log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """``gentool bench``: load and build a recipe (no data needed), then :func:`bench_run`."""
    from gentool.recipe import load_recipe
    from gentool.run import build

    recipe = load_recipe(path, overrides=list(overrides))
    return bench_run(build(recipe, device=device), settings, compare=compare, log=log)
