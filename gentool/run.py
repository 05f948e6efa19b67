"""Build a recipe's components into a :class:`Run`: the run's state, and its sampling through one service."""

from __future__ import annotations

import copy
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from gentool import compat
from gentool.devices import resolve_device
from gentool.errors import ComponentError, GentoolError, is_allocation_failure
from gentool.interfaces import TaskResult
from gentool.latent import LatentSpace
from gentool.latent_cache import LatentData, latent_split, measure_scale
from gentool.model import DiffusionModel
from gentool.parameterisation import parameterisation_of
from gentool.plugins import registry as plugin_registry
from gentool.process import Process, check_process
from gentool.recipe import ComponentSpec, Recipe, RecipeError, blame_overrides
from gentool.registry import Registry
from gentool.service import SamplingOptions, plan
from gentool.threads import set_threads

RESOLVED_RECIPE = "recipe.resolved.toml"


@dataclass
class Run:
    """Everything built from a recipe: the process, the networks, the objective, the data.

    ``model`` holds the trained (online) weights and ``ema`` their moving
    average; sampling and evaluation use :attr:`sampling_model` (the EMA when
    there is one). Sampling goes through one service
    (:func:`gentool.service.plan`): :meth:`sample` is its shortcut.

    ``space`` is where the diffusion runs (:class:`gentool.latent.LatentSpace`):
    pixel space, or the latents of the recipe's ``[autoencoder]``. The process
    and the denoiser see :meth:`encode`'s output (of :attr:`latent_shape`);
    :meth:`sample` returns :meth:`decode`'s (of :attr:`image_shape`).
    """

    recipe: Recipe
    registry: Registry
    device: torch.device
    process: Process
    model: DiffusionModel
    ema: DiffusionModel | None = None
    step: int = 0
    checkpoint: Path | None = None
    objective: Any = field(default=None, repr=False)
    _datasets: dict[Any, Any] = field(default_factory=dict, repr=False)
    space: LatentSpace = field(default_factory=LatentSpace, repr=False)

    def __repr__(self) -> str:
        """One line (a REPL printed the whole network twice): the run directory, step, device and components."""
        r = self.recipe
        params = sum(p.numel() for p in self.model.parameters())
        return (f"Run({str(self.run_dir)!r}, step={self.step}, device={str(self.device)!r}, "
                f"process={r.process.name!r}, denoiser={r.denoiser.name!r} ({params:,} parameters), "
                f"sampler={r.sampler.name!r}, ema={self.ema is not None})")

    @property
    def diffusion(self) -> Process:
        """The process (the name from when it was always the discrete DDPM chain, :class:`gentool.Diffusion`)."""
        return self.process

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir

    @property
    def sampling_model(self) -> DiffusionModel:
        return self.ema if self.ema is not None else self.model

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def dataset(self, split: str = "train"):
        """The recipe's data set for ``split`` ("train" or "test"), built once."""
        if self.recipe.data is None:
            raise RecipeError(self.recipe.source, "data", "the recipe has no [data] table")
        if split not in self._datasets:
            spec = self.recipe.data
            factory = self.registry.get("data_source", spec.name).factory
            try:
                self._datasets[split] = factory(split, **spec.options)
            except ValueError as exc:  # a data source refusing its options (the plugin contract)
                if isinstance(exc, GentoolError):
                    raise
                raise RecipeError(self.recipe.source, f"data ({spec.name})", str(exc)) from exc
        return self._datasets[split]

    def latent_dataset(self, split: str = "train", *, log: Callable[[str], None] = print):
        """The data the denoiser learns: the data set itself in pixel space, else its latents s E(x).

        The latents come from the latent cache (:mod:`gentool.latent_cache`,
        encoded on first use); the scale factor s, when the autoencoder does
        not fix it and no checkpoint recorded it, is measured on the train split.
        """
        if self.space.identity:
            return self.dataset(split)
        if ("latent", split) not in self._datasets:
            if self.recipe.data is None:
                raise RecipeError(self.recipe.source, "data", "the recipe has no [data] table")
            z, y, classes = latent_split(self.recipe, self.registry, self.space, split, self.device, log=log)
            if self.space.scale_factor is None:
                train = z if split == "train" else latent_split(self.recipe, self.registry, self.space, "train",
                                                                self.device, log=log)[0]
                self.space.scale_factor, self.space.scale_source = measure_scale(train), "measured"
                log(f"latent scale factor: {self.space.scale_factor:.6g} (1 / std of the {train.shape[0]} training "
                    "latents)")
            self._datasets[("latent", split)] = LatentData(z * self.space.scale_factor, y, classes)
        return self._datasets[("latent", split)]

    @property
    def latent(self) -> bool:
        """Whether the diffusion runs on an autoencoder's latents (an ``[autoencoder]`` other than ``identity``)."""
        return not self.space.identity

    @property
    def scale_factor(self) -> float:
        """The latent scale factor s (1 in pixel space; measured on the train split if still unknown)."""
        if self.space.scale_factor is None:
            self.latent_dataset("train")
        return float(self.space.scale_factor)

    def encode(self, x: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [-1, 1] to what the process and the denoiser work on (pixel space: ``x``)."""
        return x if self.space.identity else self.space.encode(x.to(self.device), self.scale_factor)

    def decode(self, z: Tensor) -> Tensor:
        """What the process works on back to images in [-1, 1] (pixel space: ``z``)."""
        return z if self.space.identity else self.space.decode(z.to(self.device), self.scale_factor)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` the denoiser works on: its ``image_shape``, else the data's encoded."""
        shape = getattr(self.model.denoiser, "image_shape", None)
        if shape is not None:
            return tuple(int(d) for d in shape)  # type: ignore[return-value]
        return self.space.latent_shape(tuple(self.dataset("train")[0][0].shape))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of generated images: :attr:`latent_shape` decoded (pixel space: the same)."""
        return self.space.image_shape(self.latent_shape)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Start noise x_T ~ N(0, prior_std^2 I) for ``n`` images (of :attr:`latent_shape`)."""
        x = torch.randn((n, *self.latent_shape), generator=generator, device=self.device)
        std = float(getattr(self.process, "prior_std", 1.0))
        return x if std == 1.0 else x * std

    def generator(self, seed: int | None = None) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.recipe.run.seed if seed is None else seed)
        return gen

    def sampler(self, name: str | None = None, **options: Any) -> Callable[..., Tensor]:
        """The sampler function with its recipe options (or ``name`` + ``options``) bound."""
        return plan(self, SamplingOptions(sampler=name, sampler_options=options)).sampler

    @torch.no_grad()
    def sample(self, n: int | None = None, *, x_T: Tensor | None = None, options: SamplingOptions | None = None,
               generator: torch.Generator | None = None, callback: Callable[[dict], Tensor | None] | None = None,
               progress: bool = True, description: str = "sampling", fast: bool | None = None,
               decode: bool = True, **option_values: Any) -> Tensor:
        """Generate images in [-1, 1]: ``n`` from fresh noise, or from ``x_T``.

        The request is a :class:`gentool.SamplingOptions` (``options``, or its
        fields as keywords: ``sampler``, ``steps``, ``guidance``, ``labels``,
        ``seed``, ``t_start``, ``sampler_options``, ...), resolved once by
        :func:`gentool.service.plan` against the recipe's ``[sampler]``.
        ``x_T`` and the ``callback``'s states are latents in a latent run;
        ``decode=False`` returns the sampled latents instead of images.
        """
        options = SamplingOptions.merge(options, **option_values)
        return plan(self, options, fast=fast).sample(n, x_T=x_T, generator=generator, callback=callback,
                                                    progress=progress, description=description, decode=decode)

    def sampling_inputs(self, labels: Tensor | list[int] | None = None,
                        guidance: float | None = None) -> tuple[Tensor | None, float]:
        """The labels (on the device) and the guidance weight w a sampling call uses.

        The one rule of :func:`gentool.sampling.resolve_sampling`, with the
        recipe's ``[sampler] guidance`` as the default.
        """
        from gentool.sampling import resolve_sampling

        labels, w = resolve_sampling(self.sampling_model, labels, guidance, default=self.recipe.sampler.guidance)
        return (labels.to(self.device) if labels is not None else None), w

    def denoise_fn(self, labels: Tensor | list[int] | None = None, guidance: float | None = None, *,
                   fast: bool | None = None):
        """The sampling model as ``denoise(x_t, t) -> Denoised`` with labels and guidance bound (see :func:`plan`)."""
        return plan(self, SamplingOptions(labels=labels, guidance=guidance), fast=fast).denoise

    def eps_fn(self, labels: Tensor | list[int] | None = None, guidance: float | None = None, *,
               fast: bool | None = None):
        """The noise prediction ``eps_fn(x_t, t)`` of earlier gentool versions (for samplers written for them)."""
        from gentool.legacy import legacy_eps_fn

        return legacy_eps_fn(self.denoise_fn(labels, guidance, fast=fast), self.process)

    def run_task(self, spec: ComponentSpec, out_dir: Path | None = None) -> TaskResult:
        """Run a task from the registry with its options, writing into ``out_dir``."""
        out_dir = Path(out_dir) if out_dir is not None else self.run_dir / spec.name
        out_dir.mkdir(parents=True, exist_ok=True)
        task = self.registry.get("task", spec.name).factory
        try:
            return task(self, out_dir, **spec.options)
        except ValueError as exc:  # a task refusing its options or inputs (the plugin contract)
            if isinstance(exc, GentoolError):
                raise
            raise ComponentError(f"task {spec.name!r}: {exc}") from exc


def _component(recipe: Recipe, table: str, factory: Callable[..., Any], *args: Any, **supplied: Any) -> Any:
    """``factory(*args, **supplied, **options)``; a ValueError names the recipe file and table (and the option)."""
    spec: ComponentSpec = getattr(recipe, table)
    try:
        return factory(*args, **supplied, **spec.options)
    except RecipeError:
        raise
    except (MemoryError, RuntimeError) as err:  # torch's "can't allocate memory" / out of memory
        if not is_allocation_failure(err):
            raise
        size = re.search(r"allocate (\d+) bytes", str(err))
        what = f"{int(size.group(1)) / 1e9:,.1f} GB" if size else "more memory than there is"
        raise RecipeError(recipe.source, f"{table} ({spec.name})", f"its options ask for {what} and the allocation "
                          "failed; are its sizes what you meant?") from None
    except ValueError as err:
        word = re.match(r"\w+", str(err))
        options = inspect.signature(factory).parameters
        key = f"{table}.{word.group()}" if word and word.group() in options else f"{table} ({spec.name})"
        raise RecipeError(recipe.source, key, str(err)) from err


def build_objective(recipe: Recipe, registry: Registry) -> Any:
    """The recipe's ``[objective]``, built from its factory and options."""
    return _component(recipe, "objective", registry.get("objective", recipe.objective.name).factory)


def build_process(recipe: Recipe, registry: Registry) -> Process:
    """The recipe's ``[process]``; a factory declaring ``betas`` gets the ``[schedule]``'s."""
    factory = registry.get("process", recipe.process.name).factory
    supplied = {}
    if "betas" in inspect.signature(factory).parameters:
        supplied["betas"] = _component(recipe, "schedule", registry.get("schedule", recipe.schedule.name).factory)
        key = f"schedule ({recipe.schedule.name})"
    else:
        key = f"process ({recipe.process.name})"
    try:
        process = _component(recipe, "process", factory, **supplied)
    except RecipeError as err:
        if err.key.startswith("process (") and supplied:  # the chain refusing the schedule's betas
            raise RecipeError(recipe.source, key, err.message) from None
        raise
    try:
        check_process(process)
    except TypeError as err:
        raise RecipeError(recipe.source, key, str(err)) from None
    return process


def _model(recipe: Recipe, registry: Registry, objective: Any) -> DiffusionModel:
    """The denoiser and the conditioner of a recipe, freshly initialised on torch's default device."""
    denoiser = _component(recipe, "denoiser", registry.get("denoiser", recipe.denoiser.name).factory)
    conditioner = None
    if recipe.conditioner is not None:
        cond_dim = getattr(denoiser, "cond_dim", None)
        if not cond_dim:
            raise RecipeError(recipe.source, "conditioner", f"denoiser {recipe.denoiser.name!r} takes no "
                              "conditioning (its cond_dim is None); enable it in [denoiser] or remove [conditioner]")
        factory = registry.get("conditioner", recipe.conditioner.name).factory
        conditioner = _component(recipe, "conditioner", factory, cond_dim)
    learned = bool(getattr(objective, "learned_variance", False))
    compat.check_variance_output(recipe, denoiser, learned)
    try:
        param = parameterisation_of(objective)  # what the network outputs is the objective's choice
    except (TypeError, ValueError) as err:
        raise RecipeError(recipe.source, f"objective ({recipe.objective.name})", str(err)) from None
    return DiffusionModel(denoiser, conditioner, parameterisation=param, learned_variance=learned)


def build_space(recipe: Recipe, registry: Registry, device: torch.device | str = "cpu") -> LatentSpace:
    """The recipe's ``[autoencoder]`` on ``device`` (frozen), as the run's :class:`LatentSpace`.

    Built with torch's global RNG set aside, so that an autoencoder's
    initialisation leaves the draws of everything after it as they were.
    """
    spec = recipe.autoencoder
    if spec is None:
        return LatentSpace()
    with torch.random.fork_rng(devices=[]):
        autoencoder = _component(recipe, "autoencoder", registry.get("autoencoder", spec.name).factory)
    if isinstance(autoencoder, torch.nn.Module) and not getattr(autoencoder, "identity", False):
        autoencoder = autoencoder.to(device).eval().requires_grad_(False)
    return LatentSpace(autoencoder, spec.name)


def _parts(recipe: Recipe, registry: Registry) -> tuple[Process, Any]:
    """The process and the objective, checked against each other and against every sampler the recipe names."""
    process = build_process(recipe, registry)
    objective = build_objective(recipe, registry)
    compat.check_recipe(recipe, registry, process, objective)
    return process, objective


def validate(recipe: Recipe, *, registry: Registry | None = None) -> tuple[Process, DiffusionModel]:
    """Run every component factory's own checks without allocating weights (``gentool check``).

    The process is computed on the CPU; the networks are built on the meta
    device (shapes only, which is all a parameter count needs), so a
    100M-parameter recipe checks in a moment. Every combination ``gentool
    run`` would refuse is refused here too (:mod:`gentool.compat`). Returns the
    process and the model.
    """
    if registry is None:
        registry = plugin_registry()
    compat.check_guidance(recipe)
    with blame_overrides(getattr(recipe, "overrides", ())):  # a bad --set value names that --set
        process, objective = _parts(recipe, registry)
        with torch.device("meta"):
            return process, _model(recipe, registry, objective)


def build(recipe: Recipe, *, device: str | torch.device | None = None, registry: Registry | None = None) -> Run:
    """Build every component of a validated recipe (weights freshly initialised)."""
    if registry is None:
        registry = plugin_registry()
    compat.check_guidance(recipe)
    device = resolve_device(recipe.run.device if device is None else str(device))
    set_threads(recipe.run.threads)  # process-wide: [run] threads, else gentool's default (gentool/threads.py)
    torch.manual_seed(recipe.run.seed)
    with blame_overrides(getattr(recipe, "overrides", ())):  # a bad --set value names that --set
        process, objective = _parts(recipe, registry)
        if isinstance(process, torch.nn.Module):
            process = process.to(device)
        model = _model(recipe, registry, objective).to(device)
    ema = None
    if recipe.train.ema_decay > 0:
        ema = copy.deepcopy(model).requires_grad_(False).eval()
    with blame_overrides(getattr(recipe, "overrides", ())):
        space = build_space(recipe, registry, device)
    return Run(recipe, registry, device, process, model, ema, objective=objective, space=space)
