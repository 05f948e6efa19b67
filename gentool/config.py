"""The core's own recipe tables: ``[run]``, ``[train]`` and ``[eval]``.

Each is a dataclass whose fields are the table's keys; like component
factories, the field defaults are the only defaults and the docstring's
``Args:`` block is the recipe reference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from gentool.eval_metrics import EVAL_METRICS

#: the largest sigma_rel of a power-function EMA with gamma >= 0: sqrt(1/12), every step weighted alike (EDM2 eq. 3)
PHEMA_SIGMA_REL_MAX = (1 / 12) ** 0.5


@dataclass(kw_only=True)
class RunConfig:
    """The ``[run]`` table: where and how a run happens.

    Args:
        name: run name; the run directory is ``output_dir/name`` (default: the recipe file's stem).
        seed: seed for weights, data order, timesteps and noise.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        compile: torch.compile the denoiser, for training and for sampling (there with CUDA
            graphs): ``"auto"`` compiles on CUDA only; ``true``/``false`` force it.
        compile_mode: torch.compile's mode for training: ``"default"``;
            ``"max-autotune-no-cudagraphs"`` searches for faster kernels (minutes more
            compiling); ``"reduce-overhead"`` and ``"max-autotune"`` also capture CUDA
            graphs, which pays when small batches leave the GPU waiting on Python.
            ``gentool bench --compile-mode`` measures the choices.
        output_dir: folder that holds run directories.
        threads: CPU threads torch uses in this process (``--threads``); ``0`` picks gentool's
            default, one per two cores: torch's own (one per core) slows down several times when
            other programs share the cores (docs/performance.md). A new training run takes every
            core instead when the cores are idle as it starts, and a resumed run the count it was
            trained with (recorded in its checkpoints; resume stays exact). ``OMP_NUM_THREADS``,
            when set, replaces the default.
        loggers: registered loggers that receive the training metrics, sample grids and the
            resolved recipe (``gentool list-plugins``): ``"jsonl"`` writes ``metrics.jsonl``
            (read by the plots), ``"console"`` prints metric lines. An entry may be an inline
            table with the logger's options: ``{ name = "console", digits = 6 }``.
    """

    name: str = ""
    seed: int = 0
    device: str = "auto"
    compile: Literal["auto"] | bool = "auto"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    output_dir: str = "runs"
    threads: int = 0
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])

    @property
    def torch_compile_mode(self) -> str | None:
        """``compile_mode`` as torch.compile takes it (``None`` for torch's default)."""
        return None if self.compile_mode == "default" else self.compile_mode

    def __post_init__(self) -> None:
        from gentool.options import OptionError  # a recipe error naming run.<key>

        if self.threads < 0:
            raise OptionError("threads", f"{self.threads} is negative; use 0 (gentool's default) or a count", self.threads)
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise OptionError("device", f"{self.device!r} is not a device; use \"auto\", \"cpu\", \"cuda\" or "
                                  "\"cuda:N\" (or another torch device type such as \"mps\")", self.device) from None
        if self.name and (self.name in (".", "..") or Path(self.name).name != self.name or "\\" in self.name
                          or Path(self.name).is_absolute()):
            raise OptionError("name", f"{self.name!r} is not a run name: it must be one folder name (no '/', "
                              "'\\' or '..'); the run directory is output_dir/name", self.name)
        blocker = _file_on_path(Path(self.output_dir))
        if blocker is not None:
            raise OptionError("output_dir", f"{self.output_dir!r} cannot hold run directories: {blocker} is a file, "
                              "not a folder", self.output_dir)


def _file_on_path(path: Path) -> Path | None:
    """The first part of ``path`` that exists and is not a folder (so nothing can be made under it), or None."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


@dataclass(kw_only=True)
class TrainConfig:
    """The ``[train]`` table: the optimisation of the ``[objective]``'s loss.

    Args:
        steps: optimiser steps to train for (0 skips training).
        batch_size: images per optimiser step (the global batch, over all processes).
        lr: AdamW learning rate after warm-up.
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear learning-rate warm-up from 0.
        lr_schedule: the learning rate after warm-up: ``"constant"``, or decayed towards 0 at
            ``steps`` along a half cosine (``"cosine"``) or a straight line (``"linear"``). A
            decaying rate depends on ``steps``: training a finished run on to more steps
            (``--set train.steps=N``) raises the rate again to where the longer curve is
            (a line of the run's log says so).
        grad_clip: clip the global gradient norm to this value (0 turns clipping off).
        grad_accum: micro-batches per optimiser step: each process's share of
            ``batch_size`` is split into this many and their gradients summed, so
            the optimiser still sees the global batch (less memory, same maths).
        ema_decay: decay of the exponential moving average of the weights (0 turns EMA off).
        ema_warmup: ramp the EMA decay as min(decay, (1 + n) / (10 + n)) early in training.
        phema_sigma_rels: post-hoc EMA (Karras et al. 2024, EDM2): the relative widths sigma_rel of
            the power-function EMAs tracked beside ``ema_decay``'s, each in (0, 0.2887], e.g.
            ``[0.05, 0.1]`` as the paper (empty: off). Their snapshots (``checkpoints/phema/``)
            reconstruct the EMA of any other sigma_rel after training: ``gentool ema RUN --sigma-rel S``.
        phema_every: steps between post-hoc EMA snapshots (0: every ``checkpoint_every`` steps);
            the last step always writes one.
        precision: autocast of the training forward pass: ``"auto"`` (bf16 on CUDA GPUs of compute
            capability 8.0 or higher, fp16 with loss scaling on older ones such as T4 and V100, fp32
            elsewhere), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (float16 with dynamic loss scaling:
            ``torch.amp.GradScaler``; a step whose gradients overflow is skipped and the scale halved).
        checkpoint_every: steps between checkpoints (the last step is always saved).
        keep_last: how many recent checkpoints to keep.
        milestone_every: also keep every checkpoint whose step is a multiple of this (0: none).
        sample_every: steps between sample grids written to ``samples/`` (0: none).
        sample_n: images in each of those grids and of the preview grids (the EMA model, a fixed
            noise and, for a conditional model, the classes in turn; the same every time, so the
            grids form a sequence).
        preview_every: seconds of training between preview grids (0: none): ``sample_n`` images
            with ``preview_steps`` steps of the recipe's sampler, written to
            ``samples/step_<step>.png`` and ``samples/latest.png`` (the newest grid), with the
            plots redrawn; the first comes this long after training starts. A preview draws from
            its own generator: the trained weights are the same with or without previews.
        preview_steps: sampler steps of each preview grid (few, so that a preview costs about
            as much as two or three training steps; ``sample_every`` grids use the recipe's).
        log_every: steps between metric lines in ``metrics.jsonl``.
        test_loss_every: steps between test-split losses at fixed timesteps (0: none).
        test_loss_timesteps: the fixed 0-based timesteps of the test loss (values >= T use T - 1).
        test_loss_batches: test-split batches (of at most 256 images) behind each test loss.
        num_workers: data-loader worker processes.
        data_on_device: keep the whole train split on the training device and gather
            each batch there (no loader, no host-to-device copy per step): ``"auto"``
            does so on CUDA when the data set is an in-memory tensor (Fashion-MNIST,
            MNIST, CIFAR-10) using at most a quarter of the free GPU memory;
            ``true``/``false`` force it on or off (``true`` also works on the CPU).
        on_nan: what a non-finite loss does: ``"stop"`` the run or ``"skip"`` the step.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    phema_sigma_rels: list[float] = field(default_factory=list)
    phema_every: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    checkpoint_every: int = 1000
    keep_last: int = 3
    milestone_every: int = 0
    sample_every: int = 0
    sample_n: int = 16
    preview_every: float = 60.0
    preview_steps: int = 20
    log_every: int = 50
    test_loss_every: int = 0
    test_loss_timesteps: list[int] = field(default_factory=lambda: [10, 100, 500, 900])
    test_loss_batches: int = 8
    num_workers: int = 0
    data_on_device: Literal["auto"] | bool = "auto"
    on_nan: Literal["stop", "skip"] = "stop"

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The training autocast dtype on ``device`` (``None``: fp32).

        ``"auto"``: bf16 on a CUDA GPU of compute capability 8.0 or higher (Ampere
        on: fast bf16 tensor cores), fp16 with loss scaling on an older CUDA GPU,
        fp32 on any other device.
        """
        if self.precision == "fp32" or (self.precision == "auto" and device.type != "cuda"):
            return None
        if self.precision in ("bf16", "fp16"):
            return torch.bfloat16 if self.precision == "bf16" else torch.float16
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16

    def bf16_on(self, device: torch.device) -> bool:
        """bf16 autocast on ``device``: asked for, or chosen by ``precision = "auto"``."""
        return self.autocast_dtype(device) == torch.bfloat16

    def fp16_on(self, device: torch.device) -> bool:
        """fp16 autocast with loss scaling on ``device``: asked for, or chosen by ``precision = "auto"``."""
        return self.autocast_dtype(device) == torch.float16

    def __post_init__(self) -> None:
        from gentool.options import OptionError  # a recipe error naming train.<key>

        if not self.preview_every >= 0:  # NaN too
            raise OptionError("preview_every", f"must be 0 (no previews) or a number of seconds, got "
                              f"{self.preview_every}", self.preview_every)
        for key in ("sample_n", "test_loss_batches", "preview_steps"):
            if getattr(self, key) < 1:
                raise OptionError(key, f"must be at least 1, got {getattr(self, key)}", getattr(self, key))
        if any(t < 0 for t in self.test_loss_timesteps):
            raise OptionError("test_loss_timesteps", f"timesteps are 0-based and must not be negative, got "
                              f"{self.test_loss_timesteps}", self.test_loss_timesteps)
        bad = [s for s in self.phema_sigma_rels if not 0 < s <= PHEMA_SIGMA_REL_MAX]
        if bad or len(set(self.phema_sigma_rels)) < len(self.phema_sigma_rels):
            raise OptionError("phema_sigma_rels", f"{self.phema_sigma_rels}: each sigma_rel must be in (0, "
                              f"{PHEMA_SIGMA_REL_MAX:.4f}] and appear once (e.g. [0.05, 0.1])", self.phema_sigma_rels)
        if self.phema_every < 0:
            raise OptionError("phema_every", f"must not be negative, got {self.phema_every}", self.phema_every)
        if self.grad_accum >= 1 and self.batch_size % self.grad_accum:
            raise OptionError("grad_accum", f"batch_size ({self.batch_size}) must be a multiple of grad_accum "
                              f"({self.grad_accum})", self.grad_accum)


#: Metric names ``[eval] metrics`` and ``gentool eval --metrics`` accept (the one list: gentool.eval_metrics).
EvalMetric = Literal[EVAL_METRICS]


@dataclass(kw_only=True)
class EvalConfig:
    """The ``[eval]`` table: metrics during training and the defaults of ``gentool eval``.

    Sample metrics (fid, isc, kid, prc) compare generated images with a data
    split through a torch-fidelity feature extractor; loss_t (the test loss at
    ``[train] test_loss_timesteps``) and bpd (bits/dim, Ho et al. eq. 5) are
    computed on the test split.

    Args:
        every: steps between evaluations during training (0: only with ``gentool eval``).
        metrics: metric names: ``fid``, ``isc`` (Inception Score), ``kid``, ``prc`` (precision and recall), ``class_acc`` (the fraction of class-conditional samples a trained classifier, e.g. ``gentool-cnn28`` after ``gentool features train``, assigns to the class asked for), ``loss_t``, ``bpd``.
        n: generated samples per evaluation during training (``gentool eval`` defaults to 50000).
        batch_size: images per sampling and feature-extraction batch.
        split: the data split the samples are compared with (Ho et al. use ``"train"``).
        reference_n: data-split images behind the reference statistics (0: the whole split).
        feature_extractor: a registered feature extractor (``gentool list-plugins``) or any torch-fidelity one, e.g. ``"vgg16"``.
        feature_weights: local weights file of the feature extractor (empty: its default; Inception's is downloaded).
        sampler: registered sampler for the evaluation samples (empty: the recipe's ``[sampler]``).
        steps: sampling steps (0: the recipe's ``[sampler] steps``).
        bpd_timesteps: bits/dim over all T steps (0, exact) or K randomly drawn KL terms (an unbiased estimate).
        data_batches: test-split batches of ``batch_size`` used by ``loss_t`` and ``bpd`` (0: the whole split).
        keep_best: keep the checkpoint with the best value of the first metric.
    """

    every: int = 0
    metrics: list[EvalMetric] = field(default_factory=lambda: ["fid"])
    n: int = 2000
    batch_size: int = 250
    split: Literal["train", "test"] = "train"
    reference_n: int = 0
    feature_extractor: str = "inception-v3-compat"
    feature_weights: str = ""
    sampler: str = ""
    steps: int = 0
    bpd_timesteps: int = 0
    data_batches: int = 0
    keep_best: bool = False

    def __post_init__(self) -> None:
        from gentool.options import OptionError  # a recipe error naming eval.<key>

        for key in ("n", "batch_size"):
            if getattr(self, key) < 1:
                raise OptionError(key, f"must be at least 1, got {getattr(self, key)}", getattr(self, key))
        for key in ("every", "reference_n", "steps", "bpd_timesteps", "data_batches"):
            if getattr(self, key) < 0:
                raise OptionError(key, f"must not be negative, got {getattr(self, key)}", getattr(self, key))


def as_dict(config) -> dict:
    return asdict(config)
