"""The one table of component kinds.

Each :class:`Kind` entry says everything the core needs to know about one kind
of component; the rest follows from it:

* the hook a plugin implements (``gentool_register_<plural>``, whose docstring
  in :mod:`gentool.hookspecs` is the hook's reference);
* the kinds of the :class:`gentool.registry.Registry`;
* the recipe table that names a component of the kind (:mod:`gentool.recipe`);
* the section of the recipe reference (:mod:`gentool.docs`, ``docs/recipes.md``);
* the positional parameters the core supplies to its factories
  (:func:`gentool.testing.check_factory`) and the contract tests
  (``tests/test_contracts.py``, parametrised over every registered name).

Adding a kind is one entry here plus its hookspec (pluggy needs a function to
hold the hook's signature and docstring) and a ``check_*`` in :mod:`gentool.testing`.
This module imports nothing heavy: the CLI reads it before torch is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

HOOK_PREFIX = "gentool_register_"


@dataclass(frozen=True)
class Kind:
    """One kind of component.

    Attributes:
        name: the kind as the registry and ``gentool list-plugins`` name it.
        plural: the hook is ``gentool_register_<plural>``.
        title: the heading of its section in the recipe reference.
        table: the recipe table naming a component of this kind (``None``: no
            table of its own; ``where`` says how a recipe picks one).
        where: how a recipe picks a component, as the docs show it.
        call: how the core calls a factory, as the docs show it.
        positional: the positional parameters the core supplies (never recipe options).
        reserved: keyword parameters the core supplies (never recipe options).
        required: a recipe must have this table.
        many: the table is an array of tables (``[[tasks]]``).
        options: factories take recipe options (keyword-only, documented in ``Args:``).
        supplied: keyword parameters the core supplies *when a factory declares
            them* (never recipe options; e.g. a process's ``betas`` from ``[schedule]``).
    """

    name: str
    plural: str
    title: str
    table: str | None
    where: str
    call: str
    positional: tuple[str, ...] = ()
    reserved: tuple[str, ...] = ()
    required: bool = False
    many: bool = False
    options: bool = True
    supplied: tuple[str, ...] = ()

    @property
    def hook(self) -> str:
        """The name of the collection hook a plugin implements for this kind."""
        return f"{HOOK_PREFIX}{self.plural}"


#: Sampler keyword arguments that the core supplies (never recipe options).
SAMPLER_RESERVED = ("steps", "t_start", "generator", "callback")
#: A process factory that declares ``betas`` gets the recipe's ``[schedule]`` (the discrete chain).
PROCESS_SUPPLIED = ("betas",)

KINDS: tuple[Kind, ...] = (
    Kind("data_source", "data_sources", "Data sources", "data", "[data]", "factory(split, **options)",
         positional=("split",)),
    Kind("autoencoder", "autoencoders", "Autoencoders", "autoencoder", "[autoencoder]",
         "factory(**options) -> autoencoder (encode, decode, latent_shape, image_shape, fingerprint, scale_factor)"),
    Kind("schedule", "schedules", "Schedules", "schedule", "[schedule]",
         "factory(**options) -> betas (for a process that takes betas)"),
    Kind("process", "processes", "Noise processes", "process", "[process]",
         "factory(**options) -> Process (alpha, sigma, log_snr, grid); betas=... from [schedule] if declared",
         supplied=PROCESS_SUPPLIED),
    Kind("denoiser", "denoisers", "Denoisers", "denoiser", "[denoiser]", "factory(**options) -> nn.Module",
         required=True),
    Kind("conditioner", "conditioners", "Conditioners", "conditioner", "[conditioner]",
         "factory(dim, **options) -> nn.Module", positional=("dim",)),
    Kind("objective", "objectives", "Objectives", "objective", "[objective]",
         "factory(**options) -> objective (prediction, draw, loss)"),
    Kind("sampler", "samplers", "Samplers", "sampler", "[sampler]",
         "sampler(denoise, process, x_T, *, steps, t_start, generator, callback, **options)",
         positional=("denoise", "process", "x_T"), reserved=SAMPLER_RESERVED),
    Kind("task", "tasks", "Tasks", "tasks", "[[tasks]]", "task(run, out_dir, **options) -> TaskResult",
         positional=("run", "out_dir"), many=True),
    Kind("feature_extractor", "feature_extractors", "Feature extractors", None, "[eval] feature_extractor",
         "factory(**options)"),
    Kind("logger", "loggers", "Loggers", None, "[run] loggers",
         "factory(run_dir, **options) -> logger (log_scalars, log_image, log_text, close)",
         positional=("run_dir",)),
    Kind("command", "commands", "Commands", None, "`gentool <name>`",
         "a Typer command function, added to the gentool CLI", options=False),
)

BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}
#: The kind names, in the table's order.
NAMES: tuple[str, ...] = tuple(BY_NAME)
#: hook name -> kind
BY_HOOK: dict[str, Kind] = {kind.hook: kind for kind in KINDS}
#: recipe table -> kind, for the kinds a recipe names by a table of their own
BY_TABLE: dict[str, Kind] = {kind.table: kind for kind in KINDS if kind.table}


def kind(name: str) -> Kind:
    """The kind called ``name`` (``KeyError`` listing the kinds when there is none)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown component kind {name!r}; kinds are {', '.join(NAMES)}") from None
