"""Build a recipe's components into a :class:`Run`, or load one from disk."""

from __future__ import annotations

import copy
import functools
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from gentool.devices import resolve_device
from gentool.diffusion import Diffusion
from gentool.errors import ComponentError, GentoolError, is_allocation_failure
from gentool.interfaces import SAMPLER_RESERVED, TaskResult
from gentool.model import DiffusionModel
from gentool.options import check_options
from gentool.plugins import registry as plugin_registry
from gentool.progress import progress_callback
from gentool.recipe import ComponentSpec, Recipe, RecipeError, blame_overrides
from gentool.registry import Registry
from gentool.sampling import make_eps_fn, make_fast_eps_fn, resolve_sampling
from gentool.threads import set_threads

RESOLVED_RECIPE = "recipe.resolved.toml"


@dataclass
class Run:
    """Everything built from a recipe: the maths, the networks, the data, the sampler.

    ``model`` holds the trained (online) weights and ``ema`` their moving
    average; sampling and evaluation use :attr:`sampling_model` (the EMA when
    there is one).
    """

    recipe: Recipe
    registry: Registry
    device: torch.device
    diffusion: Diffusion
    model: DiffusionModel
    ema: DiffusionModel | None = None
    step: int = 0
    checkpoint: Path | None = None
    _datasets: dict[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        """One line (a REPL printed the whole network twice): the run directory, step, device and components."""
        r = self.recipe
        params = sum(p.numel() for p in self.model.parameters())
        return (f"Run({str(self.run_dir)!r}, step={self.step}, device={str(self.device)!r}, "
                f"schedule={r.schedule.name!r}, denoiser={r.denoiser.name!r} ({params:,} parameters), "
                f"sampler={r.sampler.name!r}, ema={self.ema is not None})")
    _objective: Any = field(default=None, repr=False)

    @property
    def objective(self) -> Any:
        """The recipe's training objective (:class:`gentool.Objective`), built once."""
        if self._objective is None:
            self._objective = _objective(self.recipe, self.registry)
        return self._objective

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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of generated images: the denoiser's ``image_shape``, else the data's."""
        shape = getattr(self.model.denoiser, "image_shape", None)
        if shape is not None:
            return tuple(int(d) for d in shape)  # type: ignore[return-value]
        return tuple(self.dataset("train")[0][0].shape)  # type: ignore[return-value]

    def sampler(self, name: str | None = None, **options: Any) -> Callable[..., Tensor]:
        """The sampler function with its recipe options (or ``name`` + ``options``) bound."""
        spec = self.recipe.sampler
        if name is None or name == spec.name:
            name, options = spec.name, {**spec.options, **options}
        fn = self.registry.get("sampler", name).factory
        return functools.partial(fn, **check_options(fn, options, reserved=SAMPLER_RESERVED))

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn((n, *self.image_shape), generator=generator, device=self.device)

    def generator(self, seed: int | None = None) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.recipe.run.seed if seed is None else seed)
        return gen

    @torch.no_grad()
    def sample(
        self,
        n: int | None = None,
        *,
        x_T: Tensor | None = None,
        labels: Tensor | list[int] | None = None,
        guidance: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        sampler_options: dict[str, Any] | None = None,
        t_start: int | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[dict], Tensor | None] | None = None,
        progress: bool = True,
        description: str = "sampling",
        fast: bool | None = None,
    ) -> Tensor:
        """Generate images in [-1, 1] with the recipe's sampler (or the one named).

        ``labels`` (class indices, for a conditional model) and ``guidance``
        (default: the recipe's ``[sampler] guidance``) follow the rule of
        :meth:`sampling_inputs`; ``fast`` picks the network path as in :meth:`eps_fn`.
        """
        generator = generator if generator is not None else self.generator()
        if x_T is None:
            if n is None:
                raise ValueError("sample() needs n or x_T")
            x_T = self.noise(n, generator)
        x_T = x_T.to(self.device)
        steps = self.recipe.sampler.steps if steps is None else steps
        eps_fn = self.eps_fn(labels, guidance, fast=fast)
        fn = self.sampler(sampler, **(sampler_options or {}))
        try:  # a sampler refuses bad options or steps with a ValueError (the plugin contract)
            total = len(self.diffusion.timesteps(steps, t_start))
            with progress_callback(total, description, enabled=progress, inner=callback) as cb:
                return fn(eps_fn, self.diffusion, x_T, steps=steps, t_start=t_start, generator=generator, callback=cb)
        except ValueError as exc:
            if isinstance(exc, GentoolError):
                raise
            raise ComponentError(f"sampler {sampler or self.recipe.sampler.name!r}: {exc}") from exc

    def sampling_inputs(self, labels: Tensor | list[int] | None = None,
                        guidance: float | None = None) -> tuple[Tensor | None, float]:
        """The labels (on the device) and the guidance weight w a sampling call uses.

        The one rule of :func:`gentool.sampling.resolve_sampling`, with the
        recipe's ``[sampler] guidance`` as the default: ``guidance`` ``None``
        means the recipe's, an unconditional model refuses labels and w != 0,
        a conditional model without labels is sampled unguided.
        """
        labels, w = resolve_sampling(self.sampling_model, labels, guidance, default=self.recipe.sampler.guidance)
        return (labels.to(self.device) if labels is not None else None), w

    def eps_fn(self, labels: Tensor | list[int] | None = None, guidance: float | None = None, *,
               fast: bool | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """The sampling model's noise prediction ``eps_fn(x_t, t)`` with labels and guidance bound.

        ``labels`` and ``guidance`` are resolved by :meth:`sampling_inputs`.
        ``fast`` (default: on CUDA) evaluates the network through
        :func:`gentool.sampling.make_fast_eps_fn`: labels embedded once, the
        guidance pair as one batch, channels-last, bf16 autocast per
        ``[train] precision`` and, per ``[run] compile``, compiled with CUDA
        graphs; the same maths as the plain :func:`gentool.sampling.make_eps_fn`
        (``tests/test_fast_path.py``).
        """
        labels, guidance = self.sampling_inputs(labels, guidance)
        model = self.sampling_model.eval()
        cuda = self.device.type == "cuda"
        if not (cuda if fast is None else fast):
            return make_eps_fn(model, self.diffusion, labels, guidance)
        return make_fast_eps_fn(model, self.diffusion, labels, guidance, bf16=self.recipe.train.bf16_on(self.device),
                                compile=self.recipe.run.compile, channels_last=cuda)

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


def _component(recipe: Recipe, table: str, factory: Callable[..., Any], *args: Any) -> Any:
    """``factory(*args, **options)``; a ValueError names the recipe file and table (and the option it names)."""
    spec: ComponentSpec = getattr(recipe, table)
    try:
        return factory(*args, **spec.options)
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


def _model(recipe: Recipe, registry: Registry) -> DiffusionModel:
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
    objective = _objective(recipe, registry)  # what the network outputs is the objective's choice
    learned = bool(getattr(objective, "learned_variance", False))
    _check_variance_output(recipe, denoiser, learned)
    return DiffusionModel(denoiser, conditioner, prediction=objective.prediction, learned_variance=learned)


def _check_variance_output(recipe: Recipe, denoiser: Any, learned: bool) -> None:
    """A learned-variance objective needs a denoiser with 2C outputs (``learned_variance``), and only it."""
    outputs = bool(getattr(denoiser, "learned_variance", False))
    if learned and not outputs:
        raise RecipeError(recipe.source, "denoiser", f"objective {recipe.objective.name!r} learns the reverse "
                          f"variance, so the denoiser must output it too (2C channels); denoiser "
                          f"{recipe.denoiser.name!r} does not: set learn_sigma = true in [denoiser]")
    if outputs and not learned:
        raise RecipeError(recipe.source, "denoiser", f"the denoiser outputs a variance (learn_sigma = true) that "
                          f"objective {recipe.objective.name!r} does not train; use [objective] name = \"hybrid\" "
                          "or remove learn_sigma")


def _objective(recipe: Recipe, registry: Registry) -> Any:
    """The recipe's ``[objective]``, built from its factory and options."""
    return _component(recipe, "objective", registry.get("objective", recipe.objective.name).factory)


def _diffusion(recipe: Recipe, registry: Registry) -> Diffusion:
    betas = _component(recipe, "schedule", registry.get("schedule", recipe.schedule.name).factory)
    try:
        diffusion = Diffusion(betas)
    except ValueError as err:
        raise RecipeError(recipe.source, f"schedule ({recipe.schedule.name})", str(err)) from err
    steps, T = recipe.sampler.steps, diffusion.num_timesteps
    if steps is not None and steps > T:
        raise RecipeError(recipe.source, "sampler.steps", f"{steps} is more than the schedule's T = {T} "
                          f"timesteps; use at most {T}, or leave steps out to take them all", steps)
    eval_steps = recipe.eval.steps if recipe.eval is not None else 0
    wanted = [("eval.steps", eval_steps)] + [(f"tasks.{i}.steps", t.options.get("steps")) for i, t in enumerate(recipe.tasks)]
    for key, value in wanted:  # every sampling-step count, checked before training rather than after it
        if isinstance(value, int) and not isinstance(value, bool) and value > T:
            raise RecipeError(recipe.source, key, f"{value} is more than the schedule's T = {T} timesteps; "
                              f"use at most {T}", value)
    _check_terminal_snr(recipe, registry, diffusion)
    return diffusion


def _check_terminal_snr(recipe: Recipe, registry: Registry, diffusion: Diffusion) -> None:
    """Zero terminal SNR (alpha-bar_{T-1} = 0, Lin et al. 2024) needs a v or x0 prediction, never eps."""
    if float(diffusion.alphas_cumprod_64[-1]) > 0:
        return
    prediction = _objective(recipe, registry).prediction
    if prediction == "eps":
        raise RecipeError(recipe.source, "objective.prediction", "'eps' cannot be used with a zero-terminal-SNR "
                          "schedule: at SNR 0 the input is pure noise, so a noise prediction cannot recover x0 "
                          "there (x0 = (x_t - eps) / 0); use prediction = \"v\" (Lin et al. 2024) or \"x0\"",
                          prediction, ["v", "x0"])


def _check_guidance(recipe: Recipe) -> None:
    """``[sampler] guidance`` needs a conditioner (the rule of :func:`gentool.sampling.resolve_sampling`)."""
    if recipe.conditioner is None and recipe.sampler.guidance != 0:
        raise RecipeError(recipe.source, "sampler.guidance", f"{recipe.sampler.guidance:g} needs a class-conditional "
                          "model, but the recipe has no [conditioner]; set guidance = 0 (or leave it out), or add a "
                          "[conditioner]", recipe.sampler.guidance)


def validate(recipe: Recipe, *, registry: Registry | None = None) -> tuple[Diffusion, DiffusionModel]:
    """Run every component factory's own checks without allocating weights (``gentool check``).

    The schedule is computed on the CPU; the networks are built on the meta
    device (shapes only, which is all a parameter count needs), so a
    100M-parameter recipe checks in a moment. Returns both.
    """
    if registry is None:
        registry = plugin_registry()
    _check_guidance(recipe)
    with blame_overrides(getattr(recipe, "overrides", ())):  # a bad --set value names that --set
        diffusion = _diffusion(recipe, registry)
        with torch.device("meta"):
            return diffusion, _model(recipe, registry)


def build(recipe: Recipe, *, device: str | torch.device | None = None, registry: Registry | None = None) -> Run:
    """Build every component of a validated recipe (weights freshly initialised)."""
    if registry is None:
        registry = plugin_registry()
    _check_guidance(recipe)
    device = resolve_device(recipe.run.device if device is None else str(device))
    set_threads(recipe.run.threads)  # process-wide: [run] threads, else gentool's default (gentool/threads.py)
    torch.manual_seed(recipe.run.seed)
    with blame_overrides(getattr(recipe, "overrides", ())):  # a bad --set value names that --set
        diffusion = _diffusion(recipe, registry).to(device)
        model = _model(recipe, registry).to(device)
    ema = None
    if recipe.train.ema_decay > 0:
        ema = copy.deepcopy(model).requires_grad_(False).eval()
    return Run(recipe, registry, device, diffusion, model, ema)

