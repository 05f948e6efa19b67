"""The kinds of component gentool is built from (the table of kinds: :mod:`gentool.kinds`).

Shapes use ``B`` for the batch, ``C, H, W`` for image channels and size.
Time is the process's own (:mod:`gentool.process`): real-valued in general,
the 0-based step on the discrete chain (the integer ``t`` in ``0..T-1`` is Ho
et al.'s ``t + 1``, see :mod:`gentool.diffusion`). Images live in [-1, 1].

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
from gentool.parameterisation import Denoised, Parameterisation  # noqa: F401 - re-exported
from gentool.process import Process, Time  # noqa: F401 - re-exported

if TYPE_CHECKING:  # pragma: no cover
    from gentool.recipe import Recipe
    from gentool.registry import Registry

Prediction = Literal["eps", "x0", "v"]

#: ``denoise(x_t, t) -> Denoised``: the sampling model with conditioning and
#: guidance already bound. ``x_t`` is ``[B, C, H, W]``; ``t`` a number (the
#: whole batch at one time of the process) or a tensor ``[B]``.
DenoiseFn = Callable[[Tensor, Time], Denoised]

#: ``eps_fn(x_t, t) -> eps`` of samplers written before the noise process became a
#: component (the discrete chain only; see :mod:`gentool.legacy`).
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
    """The network: ``denoiser(x, t, cond=None) -> Tensor`` of ``x``'s shape.

    * ``x``: float ``[B, C, H, W]``, the noisy image (or what the
      parameterisation makes of it, e.g. EDM's c_in x); ``t``: the noise label
      ``[B]``: the 0-based int64 step on the discrete chain, a float tensor
      elsewhere (``process.noise_label(t)``, about 0..1000 for the built-in
      processes, or the parameterisation's own c_noise); embed it as a real number.
    * ``cond``: ``None`` or a float ``[B, cond_dim]`` embedding from a
      :class:`Conditioner`, added to the time embedding.
    * ``cond_dim``: width of ``cond`` it accepts, ``None`` if unconditional.
    * ``image_shape`` (optional): ``(C, H, W)`` of the images it is built for;
      a run samples that shape and refuses data of another. Without it, the
      run takes the shape of its data set's first image.

    What the output means (the noise, the clean image, v, a velocity) is the
    recipe's :class:`Objective`'s parameterisation, not the network's.
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

    ``sampler(denoise, process, x_T, *, steps=None, t_start=None,
    generator=None, callback=None, **options) -> x_0``

    * ``denoise``: see :data:`DenoiseFn`; guidance and conditioning are bound
      in it; its :class:`Denoised` record holds x0, eps and extras.
    * ``process``: the :class:`Process`: ``alpha(t)``, ``sigma(t)``,
      ``log_snr(t)``, ``grid(steps, t_start, spacing)``, ``t_data``;
      :mod:`gentool.reverse` is the shared toolkit.
    * ``x_T``: the start, ``[B, C, H, W]``; pure noise unless ``t_start`` is set.
    * ``steps``: number of steps of the grid (``None``: the process's default,
      all ``t_start + 1`` steps on the discrete chain).
    * ``t_start``: the time ``x_T`` belongs to (default ``process.t_max``);
      SDEdit-style variations start lower.
    * ``generator``: the only source of randomness.
    * ``callback``: called after every step with a dict ``{"i", "t", "t_next",
      "x", "x0"}`` (``x`` the new state at ``t_next``, the data time after the
      last step: ``-1`` on the discrete chain); if it returns a tensor,
      sampling continues from that tensor.

    A sampler may have an attribute ``supports(process) -> str | None`` saying
    why it cannot run on a process (``gentool check`` refuses those).
    """

    def __call__(
        self,
        denoise: DenoiseFn,
        process: Process,
        x_T: Tensor,
        *,
        steps: int | None = None,
        t_start: float | None = None,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        **options: Any,
    ) -> Tensor: ...


@dataclass
class TaskResult:
    """What a task wrote (``files``) and measured (``metrics``)."""

    files: list[Path] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


class RunLike(Protocol):
    """What a task, a command or the sampling service needs of a built run (:class:`gentool.Run` is one).

    The process, the networks (``sampling_model`` carries the EMA weights), the
    recipe and registry, the device, data, noise and seeded generators, and
    sampling through :meth:`sample` (a :class:`gentool.SamplingOptions` or its
    fields as keywords). In a latent run (``latent``) the process works on
    ``encode``'s latents of ``latent_shape``; ``sample`` returns ``decode``'s
    images of ``image_shape`` (pixel space: the two shapes are one, and
    ``encode`` and ``decode`` return their argument).
    """

    recipe: "Recipe"
    registry: "Registry"
    device: torch.device
    process: Process
    step: int

    @property
    def sampling_model(self) -> nn.Module: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    def latent_shape(self) -> tuple[int, int, int]: ...

    @property
    def latent(self) -> bool: ...

    @property
    def run_dir(self) -> Path: ...

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...

    def dataset(self, split: str = "train") -> Any: ...

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    def generator(self, seed: int | None = None) -> torch.Generator: ...

    def sample(self, n: int | None = None, **kwargs: Any) -> Tensor: ...


class Task(Protocol):
    """A named job: ``task(run, out_dir, **options) -> TaskResult``.

    ``run`` is a built run (:class:`RunLike`: networks with EMA weights loaded,
    the process, sampler settings); ``out_dir`` an existing folder to write into.
    """

    def __call__(self, run: RunLike, out_dir: Path, **options: Any) -> TaskResult: ...


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
      already in [-1, 1] (or a latent run's scaled latents, any range);
    * ``labels``: int ``[N]`` (``-1``: none);
    * ``image_size`` (optional): the side the items are resized to; the
      device copy is used only when ``images`` already has that size;
    * ``random_flip`` (optional): each item is flipped left-right with
      probability 1/2 (drawn on the device from a per-step generator).
    """

    images: Tensor
    labels: Tensor


@runtime_checkable
class Autoencoder(Protocol):
    """How images map to the latents a denoiser works on: ``factory(**options) -> autoencoder`` (``[autoencoder]``).

    An ``nn.Module`` (the core moves it to the run's device) with:

    * ``encode(x) -> z``: images ``[B, C, H, W]`` in [-1, 1] to latents
      ``[B, c, h, w]``, deterministic and unscaled (a KL autoencoder returns
      its posterior mean);
    * ``decode(z) -> x``: latents back to images (the core clamps them to [-1, 1]);
    * ``latent_shape((C, H, W)) -> (c, h, w)`` and ``image_shape((c, h, w)) ->
      (C, H, W)``; ``latent_shape`` raises ``ValueError`` for images it cannot
      encode (another number of channels, a size not divisible by its factor);
    * ``fingerprint``: a hash of the weights (the latent cache is keyed by it);
    * ``scale_factor``: the number latents are multiplied by before the
      diffusion sees them, or ``None``: the core measures 1/std of the
      training latents, 1/std, as Rombach et al. 2022 do;
    * ``identity`` (optional, default ``False``): pixel space, the default
      ``identity`` autoencoder: the core neither encodes, caches nor scales;
    * ``missing_weights() -> str | None`` (optional): why it cannot encode yet
      (a ``kl`` autoencoder before ``gentool autoencoder train``: its weights
      do not exist), or ``None``.
    """

    fingerprint: str
    scale_factor: float | None

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]: ...

    def image_shape(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]: ...


class Objective(Protocol):
    """What the network is trained on: ``factory(**options) -> objective`` (the ``[objective]`` table).

    * ``parameterisation`` (a :class:`Parameterisation`): what the network
      outputs; the model, the loss and every sampler use it. Instead, the
      classic ``prediction`` string: ``"eps"`` (the noise), ``"x0"`` (the clean
      image) or ``"v"`` (Salimans and Ho 2022).
    * ``learned_variance`` (optional, default ``False``): the network outputs
      ``2C`` channels, ``C`` of its prediction, then ``C`` of the variance
      interpolation ``v`` (Nichol and Dhariwal 2021; the discrete chain only).
    * ``check(process) -> str | None`` (optional): why it cannot train on a
      process (``gentool check`` refuses the recipe, naming both).
    * ``draw(process, x0, generator) -> (t, noise)``: the times (``[B]``: int64
      steps on the discrete chain, floats elsewhere) and the noise (like ``x0``)
      of a training batch, drawn from ``generator`` only.
    * ``loss(net, process, x0, labels, t, noise) -> (per_example, extras)``:
      the loss of each example (float32 ``[B]``) and extra per-batch scalars to
      log (a dict of 0-d tensors, may be empty). ``net(x_t, t, labels)`` is the
      model at time ``t`` (the parameterisation's ``inputs`` already applied)
      and returns its raw output in float32; the engine has applied autocast
      and its fast path to it.
    * ``start(run, *, fresh)`` (optional): called by the train loop before a
      session's first step, once the checkpoint is restored (``fresh=False``)
      or a new run is seeded (``fresh=True``), for an objective that needs
      the run: a distillation loads its frozen teacher there and gives a fresh
      student the teacher's weights (``gentool distill``, docs/distillation.md).
    * ``state_dict()`` / ``load_state_dict(state)`` (optional): what it keeps
      between steps (tensors and plain values), saved in every checkpoint and
      put back on resume (e.g. progressive distillation's current teacher).
    """

    def draw(self, process: Process, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]: ...

    def loss(self, net: Callable[..., Tensor], process: Process, x0: Tensor, labels: Tensor | None,
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
    "Autoencoder",
    "Conditioner",
    "DataSource",
    "DenoiseFn",
    "Denoised",
    "Denoiser",
    "EpsFn",
    "InMemoryImages",
    "KINDS",
    "Logger",
    "Objective",
    "Parameterisation",
    "Prediction",
    "Process",
    "RunLike",
    "Sampler",
    "Schedule",
    "StepCallback",
    "Task",
    "TaskResult",
    "nn",
]
