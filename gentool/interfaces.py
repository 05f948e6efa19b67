"""The kinds of component gentool is built from (the table of kinds: :mod:`gentool.kinds`).

Shapes use ``B`` for the batch, ``C, H, W`` for image channels and size.
Timesteps are 0-based: the integer ``t`` in ``0..T-1`` is Ho et al.'s
``t + 1`` (see :mod:`gentool.diffusion`). Images live in [-1, 1].

These are :class:`typing.Protocol` classes: a component needs the right shape,
not a base class. :mod:`gentool.testing` checks the contracts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gentool import kinds as _kinds
from gentool.kinds import SAMPLER_RESERVED  # noqa: F401 - re-exported

if TYPE_CHECKING:  # pragma: no cover
    from gentool.diffusion import Diffusion
    from gentool.run import Run

Prediction = Literal["eps", "x0", "v"]

#: ``eps_fn(x_t, t) -> eps``: the noise prediction with conditioning and guidance
#: already bound. ``x_t`` is ``[B, C, H, W]``, ``t`` an int64 tensor ``[B]``.
#: Optional attributes: ``eps_fn.eps_and_x0(x_t, t) -> (eps, x0)`` (a v or x0
#: model, finite where alpha-bar is 0) and, for a learned-variance model,
#: ``eps_fn.variance_v``: the network's variance output v of the last call
#: (:func:`gentool.vlb.last_variance`).
EpsFn = Callable[[Tensor, Tensor], Tensor]

#: A sampler's ``callback(step) -> None | x``: see :class:`Sampler`.
StepCallback = Callable[[dict], Tensor | None]


class Schedule(Protocol):
    """A noise schedule: ``schedule(*, timesteps, **options) -> betas``.

    ``betas`` is a float64 tensor ``[T]`` with every value in (0, 1);
    ``betas[t]`` is Ho et al.'s ``beta_{t+1}``.
    """

    def __call__(self, *, timesteps: int, **options: Any) -> Tensor: ...


@runtime_checkable
class Denoiser(Protocol):
    """The network: ``denoiser(x_t, t, cond=None) -> Tensor`` of ``x_t``'s shape.

    * ``x_t``: float ``[B, C, H, W]``; ``t``: int64 ``[B]`` (0-based).
    * ``cond``: ``None`` or a float ``[B, cond_dim]`` embedding from a
      :class:`Conditioner`, added to the time embedding.
    * ``cond_dim``: width of ``cond`` it accepts, ``None`` if unconditional.
    * ``image_shape`` (optional): ``(C, H, W)`` of the images it is built for;
      a run samples that shape and refuses data of another. Without it, the
      run takes the shape of its data set's first image.

    What the output means (the noise, the clean image or v) is the recipe's
    :class:`Objective`'s ``prediction``, not the network's.
    """

    cond_dim: int | None

    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Conditioner(Protocol):
    """Turns labels into the embedding a denoiser consumes.

    ``conditioner(labels) -> [B, dim]``. ``labels`` is an int64 tensor ``[B]``
    where ``-1`` means "no label" (the null token). In training mode the
    conditioner itself drops labels to the null token with its ``p_uncond``
    probability (classifier-free guidance training, Ho and Salimans 2022).
    ``num_classes`` tells samplers and tasks which labels exist.
    """

    num_classes: int

    def __call__(self, labels: Tensor) -> Tensor: ...


class Sampler(Protocol):
    """A reverse process from noise to data, as a plain function.

    ``sampler(eps_fn, diffusion, x_T, *, steps=None, t_start=None,
    generator=None, callback=None, **options) -> x_0``

    * ``eps_fn``: see :data:`EpsFn`; guidance and conditioning are bound in it.
    * ``x_T``: the start, ``[B, C, H, W]``; pure noise unless ``t_start`` is set.
    * ``steps``: number of network evaluations' worth of steps (``None``: all
      ``t_start + 1`` steps).
    * ``t_start``: the 0-based timestep ``x_T`` belongs to (default ``T - 1``);
      SDEdit-style variations start lower.
    * ``generator``: the only source of randomness.
    * ``callback``: called after every step with a dict ``{"i", "t", "t_next",
      "x", "x0"}`` (``x`` the new state at ``t_next``, ``-1`` after the last
      step); if it returns a tensor, sampling continues from that tensor.
    """

    def __call__(
        self,
        eps_fn: EpsFn,
        diffusion: "Diffusion",
        x_T: Tensor,
        *,
        steps: int | None = None,
        t_start: int | None = None,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        **options: Any,
    ) -> Tensor: ...


@dataclass
class TaskResult:
    """What a task wrote (``files``) and measured (``metrics``)."""

    files: list[Path] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


class Task(Protocol):
    """A named job: ``task(run, out_dir, **options) -> TaskResult``.

    ``run`` is a built :class:`gentool.Run` (networks with EMA weights loaded,
    diffusion, sampler settings); ``out_dir`` an existing folder to write into.
    """

    def __call__(self, run: "Run", out_dir: Path, **options: Any) -> TaskResult: ...


class DataSource(Protocol):
    """``source(split, **options) -> Dataset`` of ``(image, label)``.

    ``split`` is ``"train"`` or ``"test"``. Images are float32 ``[C, H, W]``
    in [-1, 1]; labels are ``int`` (``-1`` where the data set has none).
    The dataset may expose ``classes`` (a list of class names), and may hold
    its images in memory as an :class:`InMemoryImages`, so that training can
    keep the whole split on the GPU.

    The factory may also have a ``shape`` attribute, ``shape(split,
    **options) -> (N, C, H, W)``, telling the split's size and image shape
    without loading the images (e.g. from file headers), or None when only
    loading can tell; ``gentool check`` asks it instead of building the data
    set. It takes the same options (every one given) and raises the same
    errors for missing files and refused options as the factory, and
    :func:`gentool.testing.check_data_source` checks that it agrees with the
    data set.
    """

    def __call__(self, split: str, **options: Any) -> torch.utils.data.Dataset: ...


@runtime_checkable
class InMemoryImages(Protocol):
    """A data set whose images are one tensor in memory (optional, for speed).

    With ``[train] data_on_device``, :func:`gentool.engine.data.device_batches`
    copies ``images`` and ``labels`` to the GPU once and gathers each batch
    there, with the same order as the data loader; ``dataset[i]`` must then
    equal what it computes from them.

    * ``images``: ``[N, C, H, W]``, uint8 (read as ``x / 127.5 - 1``) or float
      already in [-1, 1];
    * ``labels``: int ``[N]`` (``-1``: none);
    * ``image_size`` (optional): the side the items are resized to; the
      device copy is used only when ``images`` already has that size;
    * ``random_flip`` (optional): each item is flipped left-right with
      probability 1/2 (drawn on the device from a per-step generator).
    """

    images: Tensor
    labels: Tensor


class Objective(Protocol):
    """What the network is trained on: ``factory(**options) -> objective`` (the ``[objective]`` table).

    * ``prediction``: what the network outputs, ``"eps"`` (the noise), ``"x0"``
      (the clean image) or ``"v"`` (Salimans and Ho 2022); the model and the
      samplers learn it from here (:class:`gentool.Diffusion` converts).
    * ``learned_variance`` (optional, default ``False``): the network outputs
      ``2C`` channels, ``C`` of its prediction, then ``C`` of the variance
      interpolation ``v`` (Nichol and Dhariwal 2021).
    * ``draw(diffusion, x0, generator) -> (t, noise)``: the timesteps (int64
      ``[B]`` in ``0..T-1``) and the noise (like ``x0``) of a training batch,
      drawn from ``generator`` only.
    * ``loss(net, diffusion, x0, labels, t, noise) -> (per_example, extras)``:
      the loss of each example (float32 ``[B]``) and extra per-batch scalars to
      log (a dict of 0-d tensors, may be empty). ``net(x_t, t, labels)`` returns
      float32; the engine has applied autocast and its fast path to it.
    """

    prediction: Prediction

    def draw(self, diffusion: "Diffusion", x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]: ...

    def loss(self, net: Callable[..., Tensor], diffusion: "Diffusion", x0: Tensor, labels: Tensor | None,
             t: Tensor, noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]: ...


class Logger(Protocol):
    """Where training metrics go: ``factory(run_dir, **options) -> logger`` (``[run] loggers``).

    The engine calls every chosen logger on rank 0. ``step`` is the optimiser
    step; ``image`` is ``[C, H, W]`` float in [0, 1] (a sample grid); ``text``
    e.g. the resolved recipe (at the first step of a session). A logger that
    raises is reported once as a warning and switched off: it never stops training.
    """

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None: ...

    def log_image(self, step: int, name: str, image: Tensor) -> None: ...

    def log_text(self, step: int, name: str, text: str) -> None: ...

    def close(self) -> None: ...


#: The kind names (the table of kinds is :data:`gentool.kinds.KINDS`).
KINDS: tuple[str, ...] = _kinds.NAMES

__all__ = [
    "Conditioner",
    "DataSource",
    "Denoiser",
    "EpsFn",
    "InMemoryImages",
    "KINDS",
    "Logger",
    "Objective",
    "Prediction",
    "Sampler",
    "Schedule",
    "StepCallback",
    "Task",
    "TaskResult",
    "nn",
]
