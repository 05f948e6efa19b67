"""The sampling service: one request (:class:`SamplingOptions`) resolved once against a run, then sampled.

Every way of sampling a run goes through :func:`plan`: :meth:`gentool.Run.sample`,
every task (through the options block of :func:`gentool.sampling_task`), ``gentool
sample`` and the task commands, ``gentool eval``. It resolves, in one place:

* the sampler: ``options.sampler`` or the recipe's ``[sampler] name``; the
  recipe's sampler options belong to the recipe's sampler, so they apply when
  the same sampler is asked for and are set aside (with a note saying which)
  when another one is; ``options.sampler_options`` are added and checked
  against the sampler's signature;
* whether the sampler fits the run's process (:mod:`gentool.compat`);
* the steps (``options.steps``, else the recipe's ``[sampler] steps``, else
  the process's default) and the start time;
* the labels and the guidance (:func:`gentool.sampling.resolve_sampling`), with
  the guidance interval and CFG rescale (the request's, else the recipe's ``[sampler]``);
* the network path: the reference :func:`gentool.sampling.make_denoise_fn`, or
  on CUDA the compiled :func:`gentool.sampling.make_fast_denoise_fn`;
* in a latent run (an ``[autoencoder]`` other than ``identity``): samplers
  never clip x0 to [-1, 1], the range of images, not of latents (a request's
  own ``clip_denoised`` wins), and :meth:`Plan.sample` decodes what it sampled.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import Tensor

from gentool.autoguidance import guide_run, kind_of, make_autoguided_fn
from gentool.compat import sampler_fits
from gentool.errors import ComponentError, GentoolError, UsageError
from gentool.kinds import SAMPLER_RESERVED
from gentool.legacy import adapt
from gentool.options import OptionError, check_options
from gentool.progress import progress_callback
from gentool.sampling import Guidance, make_denoise_fn, make_fast_denoise_fn, resolve_sampling

if TYPE_CHECKING:  # pragma: no cover
    from gentool.interfaces import RunLike


@dataclass(frozen=True)
class SamplingOptions:
    """One sampling request; ``None`` means "the recipe's" (or the process's default).

    Attributes:
        sampler: a registered sampler name (default: the recipe's ``[sampler]``).
        steps: sampling steps (default: the recipe's ``[sampler] steps``, else the process's default: all T
            steps on the discrete chain).
        guidance: classifier-free guidance weight w (default: the recipe's ``[sampler] guidance``).
        seed: seed of the start noise and the sampler's noise (default: the recipe's ``[run] seed``).
        labels: class labels of a conditional model, one per image (``-1``: none).
        t_start: the time the start state belongs to (default: the process's noisiest, ``t_max``).
        sampler_options: options for the sampler beyond the recipe's (its keyword-only parameters).
        guidance_interval: guide only where Karras' sigma = sigma / alpha lies in ``(lo, hi]``
            (Kynkaanniemi et al. 2024); default: the recipe's ``[sampler] guidance_interval``; empty: everywhere.
        guidance_rescale: CFG rescale phi (Lin et al. 2024); default: the recipe's ``[sampler]
            guidance_rescale``; 0: off.
        guide_with: autoguidance (Karras et al. 2024): the weaker model that guides, a run directory or
            checkpoint of the same process and parameterisation (e.g. an earlier checkpoint of the run), or
            a loaded run; w then mixes D_good + w (D_good - D_bad) (:mod:`gentool.autoguidance`).
        guidance_kind: ``"cfg"`` (classifier-free) or ``"auto"`` (autoguidance); default: ``"auto"`` when
            ``guide_with`` is given, else ``"cfg"``.
    """

    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    labels: Any = None
    t_start: float | None = None
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    guidance_interval: tuple[float, float] | None = None
    guidance_rescale: float | None = None
    guide_with: Any = None
    guidance_kind: str | None = None

    @classmethod
    def merge(cls, base: "SamplingOptions | None" = None, **values: Any) -> "SamplingOptions":
        """``base`` (or the defaults) with the given fields replaced; an unknown field is a ``TypeError``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"unknown sampling option(s) {unknown}; valid: {sorted(names)}")
        values = {k: v for k, v in values.items() if not (k == "sampler_options" and v is None)}
        return replace(base or cls(), **values)


@dataclass
class Plan:
    """A resolved request: the sampler with its options bound, steps, labels, w and the denoise function."""

    run: Any
    name: str
    sampler: Callable[..., Tensor]
    steps: int | None
    t_start: float | None
    labels: Tensor | None
    guidance: Guidance
    denoise: Callable[..., Any]
    seed: int
    notes: list[str] = field(default_factory=list)

    @property
    def w(self) -> float:
        return self.guidance.w

    def grid(self) -> list[float]:
        """The times the sampler visits (for progress bars: its length is the number of steps)."""
        return list(self.run.process.grid(self.steps, self.t_start))

    def sample(self, n: int | None = None, *, x_T: Tensor | None = None, generator: torch.Generator | None = None,
               callback: Callable[[dict], Tensor | None] | None = None, progress: bool = True,
               description: str = "sampling", decode: bool = True) -> Tensor:
        """``n`` images from fresh noise (or from ``x_T``), in [-1, 1].

        In a latent run ``x_T`` and the callback's states are latents, and the
        result is decoded (``decode=False``: the latents themselves).
        """
        run = self.run
        generator = generator if generator is not None else run.generator(self.seed)
        if x_T is None:
            if n is None:
                raise ValueError("sample() needs n or x_T")
            x_T = run.noise(n, generator)
        x_T = x_T.to(run.device)
        try:  # a sampler refuses bad options or steps with a ValueError (the plugin contract)
            total = len(self.grid())
            with progress_callback(total, description, enabled=progress, inner=callback) as cb:
                x = self.sampler(self.denoise, run.process, x_T, steps=self.steps, t_start=self.t_start,
                                 generator=generator, callback=cb)
        except ValueError as exc:
            if isinstance(exc, GentoolError):
                raise
            raise ComponentError(f"sampler {self.name!r}: {exc}") from exc
        return run.decode(x) if decode and latent(run) else x


def latent(run: Any) -> bool:
    """Whether ``run`` diffuses latents (an ``[autoencoder]`` other than ``identity``)."""
    space = getattr(run, "space", None)
    return space is not None and not space.identity


def sampler_options(run: Any, name: str, given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The options of sampler ``name``: the recipe's when it is the recipe's sampler, plus ``given``; and notes."""
    spec = run.recipe.sampler
    notes = []
    if name == spec.name:
        options = {**spec.options, **given}
    else:
        options = dict(given)
        defaults = check_options(run.registry.get("sampler", name).factory, {}, reserved=SAMPLER_RESERVED)
        # the resolved recipe holds every default of its sampler: only what the recipe chose is worth a note
        own = check_options(run.registry.get("sampler", spec.name).factory, {}, reserved=SAMPLER_RESERVED)
        missing = object()
        dropped = {k: v for k, v in spec.options.items()
                   if k not in given and defaults.get(k, missing) != v and own.get(k, missing) != v}
        if dropped:
            listed = ", ".join(f"{k} = {v!r}" for k, v in dropped.items())
            notes.append(f"sampler {name!r} runs with its own defaults: the recipe's [sampler] options ({listed}) "
                         f"belong to {spec.name!r}; pass options for {name!r} explicitly (a task's "
                         "sampler_options, or -O KEY=VALUE on the command line)")
    return options, notes


def _denoise_fn(run: "RunLike", model: Any, labels: Tensor | None, guidance: Guidance, fast: bool | None):
    """``model`` as ``denoise(x_t, t)``: the reference path, or on CUDA (``fast``) the compiled one."""
    model = model.eval()
    cuda = run.device.type == "cuda"
    if cuda if fast is None else fast:
        return make_fast_denoise_fn(model, run.process, labels, guidance, bf16=run.recipe.train.bf16_on(run.device),
                                    compile=run.recipe.run.compile, channels_last=cuda)
    return make_denoise_fn(model, run.process, labels, guidance)


def plan(run: "RunLike", options: SamplingOptions | None = None, *, fast: bool | None = None) -> Plan:
    """Resolve ``options`` against ``run`` once (see the module docstring)."""
    options = options or SamplingOptions()
    spec = run.recipe.sampler
    name = options.sampler or spec.name
    if ("sampler", name) not in run.registry:
        from gentool.registry import closest

        near = closest(name, run.registry.names("sampler"))
        hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
        raise UsageError(f"unknown sampler {name!r}{hint} (registered: {', '.join(run.registry.names('sampler'))})")
    factory = run.registry.get("sampler", name).factory
    why = sampler_fits(factory, run.process, getattr(run, "objective", None))
    if why:
        raise UsageError(f"sampler {name!r} cannot sample this run (process {run.recipe.process.name!r}, objective "
                         f"{run.recipe.objective.name!r}): {why}")
    opts, notes = sampler_options(run, name, dict(options.sampler_options or {}))
    try:
        opts = check_options(factory, opts, reserved=SAMPLER_RESERVED)
    except OptionError as exc:
        raise UsageError(f"sampler {name!r}: option {exc.key!r}: {exc.message}") from None
    if latent(run) and opts.get("clip_denoised") and "clip_denoised" not in (options.sampler_options or {}):
        opts["clip_denoised"] = False  # latents are not images in [-1, 1]
    fn = functools.partial(adapt(factory), **opts)
    steps = options.steps if options.steps is not None else spec.steps
    guide = guide_run(run, options.guide_with) if kind_of(options) == "auto" else None
    labels, w = resolve_sampling(run.sampling_model, options.labels, options.guidance, default=spec.guidance,
                                 label_free=guide is not None)
    labels = labels.to(run.device) if labels is not None else None
    interval = spec.guidance_interval if options.guidance_interval is None else options.guidance_interval
    # the recipe's guidance_rescale is CFG rescale; autoguidance takes only an explicit one (which it refuses)
    recipe_rescale = spec.guidance_rescale if guide is None else 0.0
    rescale = recipe_rescale if options.guidance_rescale is None else options.guidance_rescale
    guidance = Guidance(w, tuple(interval) if interval else None, float(rescale))
    if guide is None:
        denoise = _denoise_fn(run, run.sampling_model, labels, guidance, fast)
    else:
        if guidance.rescale:
            raise UsageError("guidance_rescale is CFG rescale (Lin et al. 2024): it applies to classifier-free "
                             "guidance, not to autoguidance (guide_with); leave it 0")
        good, bad = (_denoise_fn(run, m, labels, Guidance(), fast) for m in (run.sampling_model, guide.sampling_model))
        denoise = make_autoguided_fn(good, bad, run.process, guidance)
    seed = run.recipe.run.seed if options.seed is None else int(options.seed)
    for note in notes:
        say_once(note)
    return Plan(run, name, fn, steps, options.t_start, labels, guidance, denoise, seed, notes)


_SAID: set[str] = set()


def say_once(note: str) -> None:
    """Print ``note: ...`` on standard error, once per process (a task samples many times with one request)."""
    if note not in _SAID:
        _SAID.add(note)
        from gentool.progress import console

        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


#: The options a task decorated with :func:`sampling_task` takes, with their recipe documentation.
SAMPLING_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "guidance": (float | None, None, "classifier-free guidance weight w (default: the recipe's ``[sampler] guidance``)."),
    "sampler": (str | None, None, "a registered sampler name (default: the recipe's ``[sampler]``)."),
    "steps": (int | None, None, "sampling steps (default: the recipe's ``[sampler] steps``, else the process's "
                                "default: all T on the discrete chain)."),
    "seed": (int | None, None, "seed of the noise (default: the recipe's ``[run] seed``)."),
    "sampler_options": (dict[str, Any], {}, "options of the sampler, e.g. ``{ eta = 1.0 }`` (the recipe's "
                                            "``[sampler]`` options apply only when it is the recipe's sampler)."),
    "guidance_interval": (list[float], [], "guide only where Karras' sigma = sigma / alpha lies in "
                                           "(lo, hi], given as ``[lo, hi]`` (Kynkaanniemi et al. 2024); empty: "
                                           "the recipe's ``[sampler] guidance_interval``."),
    "guidance_rescale": (float | None, None, "CFG rescale phi (Lin et al. 2024; default: the recipe's)."),
    "guide_with": (str | None, None, "autoguidance (Karras et al. 2024): the weaker model that guides, a run "
                                     "directory or checkpoint of the same process (e.g. an earlier checkpoint of "
                                     "the run); ``guidance`` is then its w, D_good + w (D_good - D_bad) "
                                     "(default: none, classifier-free guidance)."),
}


def sampling_task(task: Callable[..., Any] | None = None, *, exclude: tuple[str, ...] = (),
                  docs: dict[str, str] | None = None, **defaults: Any) -> Callable[..., Any]:
    """Give a task the shared sampling options and pass them to it as one :class:`SamplingOptions`.

    The task is written ``task(run, out_dir, *, sampling: SamplingOptions, **its_own)``;
    the decorated function takes its own options plus those of
    :data:`SAMPLING_OPTIONS` (minus ``exclude``; ``defaults`` change a default,
    ``docs`` an option's description),
    all keyword-only and documented in its ``Args:`` block, so a recipe's
    ``[[tasks]]`` table, the task's command and the recipe reference see flat
    options (``steps = 50``, ``sampler_options = { eta = 1.0 }``). Labels are the
    task's own business (``dataclasses.replace(sampling, labels=...)``).
    """
    if task is None:
        return functools.partial(sampling_task, exclude=exclude, docs=docs, **defaults)
    import inspect

    unknown = sorted(set(defaults) - set(SAMPLING_OPTIONS))
    if unknown:
        raise TypeError(f"sampling_task: unknown option default(s) {unknown}; options: {sorted(SAMPLING_OPTIONS)}")
    shared = {k: v for k, v in SAMPLING_OPTIONS.items() if k not in exclude}
    sig = inspect.signature(task)
    own = [p for p in sig.parameters.values() if p.name != "sampling"]
    extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(k, d), annotation=a)
             for k, (a, d, _) in shared.items()]

    @functools.wraps(task)
    def wrapped(run, out_dir, **options: Any):
        values = {k: options.pop(k, defaults.get(k, d)) for k, (_, d, _) in shared.items()}
        values["guidance_interval"] = tuple(values.get("guidance_interval") or ()) or None
        values["sampler_options"] = dict(values.get("sampler_options") or {})
        fields_ = {f.name for f in fields(SamplingOptions)}
        return task(run, out_dir, sampling=SamplingOptions(**{k: v for k, v in values.items() if k in fields_}),
                    **options)

    wrapped.__signature__ = sig.replace(parameters=own + extra)
    wrapped.__annotations__ = {**{k: v for k, v in task.__annotations__.items() if k != "sampling"},
                               **{k: a for k, (a, _, _) in shared.items()}}
    wrapped.__doc__ = _with_args(task.__doc__ or "", {k: (docs or {}).get(k, doc) for k, (_, _, doc) in shared.items()})
    wrapped.sampling_options = tuple(shared)
    return wrapped


def _with_args(doc: str, args: dict[str, str]) -> str:
    """``doc`` with ``name: text`` lines appended to its ``Args:`` block (indented as the block's entries)."""
    lines = doc.rstrip().splitlines()
    indent = next((len(line) - len(line.lstrip()) for i, line in enumerate(lines)
                   if i and lines[i - 1].strip() == "Args:"), 8)
    if not any(line.strip() == "Args:" for line in lines):
        lines += ["", " " * max(indent - 4, 0) + "Args:"]
    return "\n".join(lines + [" " * indent + f"{k}: {v}" for k, v in args.items()]) + "\n"
