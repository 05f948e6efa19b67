"""The six kinds of component gentool is built from.

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

if TYPE_CHECKING:  # pragma: no cover
    from gentool.diffusion import Diffusion
    from gentool.run import Run

Prediction = Literal["eps", "x0", "v"]

#: ``eps_fn(x_t, t) -> eps``: the noise prediction with conditioning and guidance
#: already bound. ``x_t`` is ``[B, C, H, W]``, ``t`` an int64 tensor ``[B]``.
EpsFn = Callable[[Tensor, Tensor], Tensor]


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
    * ``prediction``: what the output is, ``"eps"`` (the noise), ``"x0"`` (the
      clean image) or ``"v"`` (Salimans and Ho 2022); :class:`Diffusion` converts.
    * ``cond_dim``: width of ``cond`` it accepts, ``None`` if unconditional.
    """

    prediction: Prediction
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
        callback: Callable[[dict], Tensor | None] | None = None,
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
    The dataset may expose ``classes`` (a list of class names).
    """

    def __call__(self, split: str, **options: Any) -> torch.utils.data.Dataset: ...


KINDS: tuple[str, ...] = (
    "schedule",
    "denoiser",
    "conditioner",
    "sampler",
    "task",
    "data_source",
    "feature_extractor",
)

#: Sampler keyword arguments that the core supplies (never recipe options).
SAMPLER_RESERVED = ("steps", "t_start", "generator", "callback")

__all__ = [
    "Conditioner",
    "DataSource",
    "Denoiser",
    "EpsFn",
    "KINDS",
    "Prediction",
    "Sampler",
    "Schedule",
    "Task",
    "TaskResult",
    "nn",
]
