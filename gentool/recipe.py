"""TOML recipes: load, override, validate completely, resolve and dump.

A recipe has one table per component (``name`` plus the factory's keyword
options) and the core's own tables::

    [run]         RunConfig
    [data]        a data source            (optional for sampling-only recipes)
    [autoencoder] images to latents and back (default: identity, pixel space)
    [process]     the noise process        (default: the plugins' default, the discrete DDPM chain)
    [schedule]    a schedule               (for a process that takes betas; default: linear)
    [denoiser]    a denoiser               (required)
    [conditioner] a conditioner            (optional)
    [objective]   the training objective   (default: ddpm)
    [sampler]     a sampler, plus ``steps``, ``guidance``, ``guidance_interval``, ``guidance_rescale``   (default: ancestral)
    [train]       TrainConfig
    [eval]        EvalConfig               (optional)
    [[tasks]]     tasks run after training

Validation happens before anything is built and stops at the first problem
with a :class:`RecipeError` that names the file, the key path, the bad value
and the closest valid choices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gentool.config import EvalConfig, RunConfig, TrainConfig
from gentool.errors import GentoolError
from gentool.kinds import BY_NAME, KINDS, SAMPLER_RESERVED
from gentool.options import OptionError, check_options
from gentool.registry import Registry, RegistryError, closest

#: the core's own tables (dataclasses of gentool.config)
CORE_TABLES = ("run", "train", "eval")
#: recipe table -> the kind of component it names (from the table of kinds)
COMPONENT_KIND = {k.table: k.name for k in KINDS if k.table}
SECTIONS = ("run", *(k.table for k in KINDS if k.table and not k.many), "train", "eval",
            *(k.table for k in KINDS if k.table and k.many))
#: keys that moved to another table: (table, key) -> (new table, new key)
MOVED_KEYS = {("train", "loss"): ("objective", "loss"), ("denoiser", "prediction"): ("objective", "prediction")}


class RecipeError(GentoolError, ValueError):
    """A recipe problem, formatted as ``FILE: KEY.PATH: message``."""

    def __init__(self, source: str, key: str, message: str, value: Any = None, choices: list[str] | None = None):
        self.source, self.key, self.message = source, key, message
        self.value, self.choices = value, choices or []
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


@dataclass
class ComponentSpec:
    """A component table: the registered ``name`` and its resolved options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclass
class SamplerSpec(ComponentSpec):
    """The ``[sampler]`` table.

    Besides ``name`` and the sampler's own options it holds ``steps`` (network
    evaluations; default: every timestep), ``guidance`` (classifier-free
    guidance weight w; 0 is plain conditional sampling), ``guidance_interval``
    (``[lo, hi]``: guide only where Karras' sigma = sigma / alpha is in (lo, hi],
    Kynkaanniemi et al. 2024; unset: everywhere) and ``guidance_rescale`` (CFG
    rescale phi in [0, 1], Lin et al. 2024, sec. 3.4; 0: off).
    """

    steps: int | None = None
    guidance: float = 0.0
    guidance_interval: tuple[float, float] | None = None
    guidance_rescale: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "guidance": self.guidance}
        if self.steps is not None:
            out["steps"] = self.steps
        if self.guidance_interval is not None:
            out["guidance_interval"] = list(self.guidance_interval)
        if self.guidance_rescale:
            out["guidance_rescale"] = self.guidance_rescale
        return {**out, **self.options}


@dataclass
class Recipe:
    """A validated recipe with every default filled in."""

    source: str
    run: RunConfig
    #: the ``[schedule]`` table, or None when the process takes no betas
    schedule: ComponentSpec | None
    denoiser: ComponentSpec
    sampler: SamplerSpec
    train: TrainConfig
    data: ComponentSpec | None = None
    conditioner: ComponentSpec | None = None
    eval: EvalConfig | None = None
    tasks: list[ComponentSpec] = field(default_factory=list)
    #: always set by :func:`load_recipe`: the ``[objective]`` table, or the default a plugin declared
    objective: ComponentSpec | None = None
    #: what validation changed, for the log (e.g. a key that moved to another table)
    notes: list[str] = field(default_factory=list, compare=False)
    #: ``{logger name: options}`` of the ``[run] loggers`` entries written as inline tables
    logger_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: always set by :func:`load_recipe`: the ``[process]`` table, or the default a plugin declared
    process: ComponentSpec | None = None
    #: the ``[autoencoder]`` table, or the default a plugin declared (``None``: none registered, pixel space)
    autoencoder: ComponentSpec | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain TOML-ready data (``None`` values dropped)."""
        out: dict[str, Any] = {"run": dataclasses.asdict(self.run)}
        out["run"]["loggers"] = [{"name": n, **self.logger_options[n]} if n in self.logger_options else n
                                 for n in self.run.loggers]
        if self.data is not None:
            out["data"] = self.data.to_dict()
        if self.autoencoder is not None:
            out["autoencoder"] = self.autoencoder.to_dict()
        out["process"] = self.process.to_dict()
        if self.schedule is not None:
            out["schedule"] = self.schedule.to_dict()
        out["denoiser"] = self.denoiser.to_dict()
        if self.conditioner is not None:
            out["conditioner"] = self.conditioner.to_dict()
        out["objective"] = self.objective.to_dict()
        out["sampler"] = self.sampler.to_dict()
        out["train"] = dataclasses.asdict(self.train)
        if self.eval is not None:
            out["eval"] = dataclasses.asdict(self.eval)
        if self.tasks:
            out["tasks"] = [t.to_dict() for t in self.tasks]
        return _drop_none(out)

    def dumps(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    if isinstance(value, tuple):
        return [_drop_none(v) for v in value]
    return value


# -- loading -----------------------------------------------------------------

def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(str(path), "", "no such recipe file") from None
    except IsADirectoryError:
        hint = (f"; this is a run directory: {path / 'recipe.resolved.toml'} is the recipe it was trained with"
                if (path / "recipe.resolved.toml").exists() else "")
        raise RecipeError(str(path), "", f"is a directory, not a recipe file (a .toml file){hint}") from None
    except OSError as exc:
        raise RecipeError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(str(path), "", f"not a text file: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
                          "is not UTF-8; a recipe is a UTF-8 TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(str(path), "", f"not valid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=100"`` -> (["train", "steps"], 100); values parse as TOML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError("--set", text, "an override must look like KEY.PATH=VALUE, e.g. train.steps=100")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string: --set data.name=mnist
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to the raw TOML data (a new dict is returned)."""
    import copy

    data = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError("--set", ".".join(parts[: i + 1]), f"no list item {part!r} (there are {len(node)})")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, (dict, list)):
                    raise RecipeError("--set", ".".join(parts[: i + 1]), "is a value, not a table")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise RecipeError("--set", text, f"no list item {last!r}")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def load_recipe(
    path: str | Path | None = None,
    *,
    overrides: list[str] = (),
    data: dict[str, Any] | None = None,
    registry: Registry | None = None,
) -> Recipe:
    """Load and validate a recipe file (or ``data``, a dict of TOML data).

    Raises :class:`RecipeError` naming the file and key path on any problem.
    """
    if registry is None:
        from gentool.plugins import registry as _registry

        registry = _registry()
    if data is None:
        if path is None:
            raise ValueError("load_recipe needs a path or data")
        data = read_toml(path)
    source = str(path) if path is not None else "<recipe>"
    data = apply_overrides(data, list(overrides))
    default_name = Path(path).stem if path is not None else "run"
    with blame_overrides(overrides):
        recipe = validate(data, source=source, registry=registry, default_name=default_name)
    recipe.overrides = list(overrides)  # for the errors of building it (gentool.run)
    return recipe


@contextlib.contextmanager
def blame_overrides(overrides):
    """A :class:`RecipeError` about a key given with ``--set`` names that option (:func:`overridden_source`)."""
    try:
        yield
    except RecipeError as err:  # a bad value given with --set is the option's fault, not the file's
        where = overridden_source(err.source, err.key, overrides)
        if where == err.source:
            raise
        raise RecipeError(where, err.key, err.message, err.value, err.choices) from None


def overridden_source(source: str, key: str, overrides) -> str:
    """``--set KEY=VALUE (over FILE)`` when the key path ``key`` was set by that override, else ``source``."""
    if source.startswith("--set "):
        return source
    for item in reversed(list(overrides)):
        name = item.split("=", 1)[0].strip()
        if key and (key == name or key.startswith(name + ".")):
            return f"--set {item} (over {source})"
    return source


def validate(data: dict[str, Any], *, source: str, registry: Registry, default_name: str = "run") -> Recipe:
    for key in data:
        if key not in SECTIONS:
            near = closest(key, SECTIONS)
            hint = f"did you mean {' or '.join(map(repr, near))}? " if near else ""
            raise RecipeError(source, key, f"unknown table {key!r}; {hint}valid tables: {', '.join(SECTIONS)}", key, near)
    for key in SECTIONS:
        if key in data and key != "tasks" and not isinstance(data[key], dict):
            raise RecipeError(source, key, f"must be a table ([{key}]), got {data[key]!r}")

    data, notes, moved = _move_keys(data, registry, source)
    run_table, logger_options = _logger_entries(registry, data.get("run", {}), source)
    run = _config(RunConfig, run_table, source, "run")
    _check_loggers(registry, run.loggers, source)
    if not run.name:
        run.name = default_name
    if (Path(run.output_dir) / run.name).is_file():
        raise RecipeError(source, "run.name", f"{Path(run.output_dir) / run.name} is a file, not a run directory; "
                          "choose another run.name or run.output_dir", run.name)
    train = _config(TrainConfig, data.get("train", {}), source, "train")
    eval_cfg = _config(EvalConfig, data["eval"], source, "eval") if "eval" in data else None
    if "denoiser" not in data:
        raise RecipeError(source, "denoiser", "missing table [denoiser]; a recipe must name its network", None, registry.names("denoiser"))
    process = _component(registry, "process", data.get("process", {}), source, "process")
    schedule = _schedule(registry, data, process, source)
    denoiser = _component(registry, "denoiser", data["denoiser"], source, "denoiser")
    conditioner = _component(registry, "conditioner", data["conditioner"], source, "conditioner") if "conditioner" in data else None
    sampler = _sampler(registry, data.get("sampler", {}), source)
    try:
        objective = _component(registry, "objective", data.get("objective", {}), source, "objective")
    except RecipeError as exc:  # a moved key's bad value: name the key the user wrote
        if exc.key not in moved:
            raise
        raise RecipeError(source, f"{moved[exc.key]} (now {exc.key})", exc.message, exc.value, exc.choices) from None
    data_spec = _component(registry, "data_source", data["data"], source, "data") if "data" in data else None
    autoencoder = None
    if "autoencoder" in data or registry.default("autoencoder") is not None:
        autoencoder = _component(registry, "autoencoder", data.get("autoencoder", {}), source, "autoencoder")

    tasks_raw = data.get("tasks", [])
    if not isinstance(tasks_raw, list) or not all(isinstance(t, dict) for t in tasks_raw):
        raise RecipeError(source, "tasks", "must be an array of tables ([[tasks]])")
    tasks = [_component(registry, "task", t, source, f"tasks.{i}") for i, t in enumerate(tasks_raw)]
    if train.steps > 0 and data_spec is None:
        raise RecipeError(source, "data", "training (train.steps > 0) needs a [data] table", None, registry.names("data_source"))
    _check_train(train, source)
    return Recipe(source, run, schedule, denoiser, sampler, train, data_spec, conditioner, eval_cfg, tasks,
                  objective, notes, logger_options, process, autoencoder)


def takes_betas(registry: Registry, process: ComponentSpec) -> bool:
    """Whether the process factory takes the betas of a ``[schedule]`` (the discrete chain's)."""
    return "betas" in inspect.signature(registry.get("process", process.name).factory).parameters


def _schedule(registry: Registry, data: dict[str, Any], process: ComponentSpec, source: str) -> ComponentSpec | None:
    """The ``[schedule]`` of a process that takes betas (its default when absent); refused for any other process."""
    if takes_betas(registry, process):
        return _component(registry, "schedule", data.get("schedule", {}), source, "schedule")
    if "schedule" in data:
        raise RecipeError(source, "schedule", f"process {process.name!r} takes no schedule: [schedule] sets the betas "
                          "of a process that takes them (the discrete DDPM chain); remove [schedule], or set the "
                          f"process's own options in [process]", None,
                          [n for n in registry.names("process") if takes_betas(registry, ComponentSpec(n))])
    return None


def _move_keys(data: dict[str, Any], registry: Registry,
               source: str) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """Move the keys of :data:`MOVED_KEYS` to their new table (old recipes and run directories keep working).

    ``[denoiser] prediction`` moves only when the denoiser has no such option of its own.
    The same value in both places is fine; two different values are an error.
    Returns the data, notes for the log and ``{new key path: old key path}``.
    """
    notes: list[str] = []
    moved: dict[str, str] = {}
    for (table, key), (new_table, new_key) in MOVED_KEYS.items():
        old = data.get(table)
        if not isinstance(old, dict) or key not in old:
            continue
        if table in COMPONENT_KIND and _accepts(registry, table, old, key):
            continue
        target = data.get(new_table, {})
        if not isinstance(target, dict):
            continue  # validate() reports the malformed table
        value = old[key]
        if new_key in target and target[new_key] != value:
            raise RecipeError(source, f"{table}.{key}", f"has moved to [{new_table}] {new_key}, which says "
                              f"{target[new_key]!r}; remove {table}.{key} = {value!r}", value)
        data = {**data, table: {k: v for k, v in old.items() if k != key}, new_table: {**target, new_key: value}}
        moved[f"{new_table}.{new_key}"] = f"{table}.{key}"
        notes.append(f"{source}: {table}.{key} has moved to [{new_table}] {new_key}; "
                     f"read as {new_table}.{new_key} = {value!r}")
    return data, notes, moved


def _accepts(registry: Registry, table_name: str, table: dict[str, Any], key: str) -> bool:
    """Whether the component the table names has an option ``key`` (unknown names: no)."""
    kind = COMPONENT_KIND[table_name]
    name = table.get("name", registry.default(kind))
    if not isinstance(name, str) or (kind, name) not in registry:
        return False
    return key in inspect.signature(registry.get(kind, name).factory).parameters


def _logger_entries(registry: Registry, run_table: Any, source: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    """``[run] loggers`` entries are names or inline tables ``{ name = "...", option = value }``.

    Returns the ``[run]`` table with the names alone and ``{name: resolved options}`` of the tables.
    """
    if not isinstance(run_table, dict) or not isinstance(run_table.get("loggers"), list):
        return run_table, {}
    names, options = [], {}
    for i, entry in enumerate(run_table["loggers"]):
        if not isinstance(entry, dict):
            names.append(entry)  # RunConfig checks it is a string
            continue
        name = entry.get("name")
        if not isinstance(name, str):
            raise RecipeError(source, f"run.loggers.{i}.name", "missing: a logger table needs a name, e.g. "
                              '{ name = "tensorboard", flush_secs = 10 }', name, registry.names("logger"))
        names.append(name)
        if ("logger", name) not in registry:
            continue  # _check_loggers names the closest ones
        factory = registry.get("logger", name).factory
        try:
            options[name] = check_options(factory, {k: v for k, v in entry.items() if k != "name"})
        except OptionError as exc:
            raise RecipeError(source, f"run.loggers.{i}.{exc.key}", f"{exc.message} (for logger {name!r})",
                              exc.value, exc.choices) from None
    return {**run_table, "loggers": names}, options


def _check_loggers(registry: Registry, loggers: list[str], source: str) -> None:
    for i, name in enumerate(loggers):
        if ("logger", name) not in registry:
            near = closest(name, registry.names("logger"))
            hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
            raise RecipeError(source, f"run.loggers.{i}", f"unknown logger {name!r}{hint} "
                              f"(valid: {', '.join(registry.names('logger')) or 'none registered'})",
                              name, near or registry.names("logger"))
    if len(set(loggers)) != len(loggers):
        raise RecipeError(source, "run.loggers", f"names a logger twice: {loggers}", loggers)


def _check_train(train: TrainConfig, source: str) -> None:
    positive = ("batch_size", "grad_accum", "checkpoint_every", "keep_last", "log_every")
    for key in positive:
        if getattr(train, key) < 1:
            raise RecipeError(source, f"train.{key}", f"must be at least 1, got {getattr(train, key)}", getattr(train, key))
    for key in ("steps", "warmup_steps", "sample_every", "milestone_every", "test_loss_every", "num_workers"):
        if getattr(train, key) < 0:
            raise RecipeError(source, f"train.{key}", f"must not be negative, got {getattr(train, key)}", getattr(train, key))
    if not 0 <= train.ema_decay < 1:
        raise RecipeError(source, "train.ema_decay", f"must be in [0, 1), got {train.ema_decay}", train.ema_decay)
    if train.lr <= 0:
        raise RecipeError(source, "train.lr", f"must be positive, got {train.lr}", train.lr)


def _config(cls, table: dict[str, Any], source: str, key: str):
    try:
        return cls(**check_options(cls, table))
    except OptionError as exc:
        raise RecipeError(source, f"{key}.{exc.key}", exc.message, exc.value, exc.choices) from None


def _lookup(registry: Registry, kind: str, table: dict[str, Any], source: str, key: str, default: str | None):
    name = table.get("name", default)
    if name is None:
        raise RecipeError(source, f"{key}.name", f"missing: name the {kind.replace('_', ' ')} to use", None, registry.names(kind))
    if not isinstance(name, str):
        raise RecipeError(source, f"{key}.name", f"{name!r} is not a name", name, registry.names(kind))
    try:
        return registry.get(kind, name)
    except RegistryError as exc:
        raise RecipeError(source, f"{key}.name", str(exc), name, closest(name, registry.names(kind)) or registry.names(kind)) from None


def _component(registry: Registry, kind: str, table: dict[str, Any], source: str, key: str) -> ComponentSpec:
    component = _lookup(registry, kind, table, source, key, registry.default(kind))
    options = {k: v for k, v in table.items() if k != "name"}
    try:
        resolved = check_options(component.factory, options, reserved=BY_NAME[kind].reserved + BY_NAME[kind].supplied)
    except OptionError as exc:
        raise RecipeError(source, f"{key}.{exc.key}", f"{exc.message} (for {kind} {component.name!r})", exc.value, exc.choices) from None
    return ComponentSpec(component.name, resolved)


def _sampler(registry: Registry, table: dict[str, Any], source: str) -> SamplerSpec:
    component = _lookup(registry, "sampler", table, source, "sampler", registry.default("sampler"))
    steps = table.get("steps")
    guidance = table.get("guidance", 0.0)
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise RecipeError(source, "sampler.steps", f"{steps!r} is not valid: expected a positive integer", steps)
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or guidance != guidance or abs(guidance) == float("inf"):
        raise RecipeError(source, "sampler.guidance", f"{guidance!r} is not valid: expected a finite number", guidance)
    interval = _guidance_interval(table.get("guidance_interval"), source)
    rescale = table.get("guidance_rescale", 0.0)
    if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not 0 <= rescale <= 1:
        raise RecipeError(source, "sampler.guidance_rescale", f"{rescale!r} is not valid: expected a number in "
                          "[0, 1] (phi of Lin et al. 2024; 0: off, 0.7 in the paper)", rescale)
    options = {k: v for k, v in table.items() if k not in SAMPLER_TABLE_KEYS}
    try:
        resolved = check_options(component.factory, options, reserved=SAMPLER_RESERVED)
    except OptionError as exc:
        valid_extra = f" (also valid: {', '.join(SAMPLER_TABLE_KEYS[1:])})" if exc.message.startswith("unknown key") else ""
        raise RecipeError(source, f"sampler.{exc.key}", exc.message + valid_extra, exc.value, exc.choices) from None
    return SamplerSpec(component.name, resolved, steps=steps, guidance=float(guidance), guidance_interval=interval,
                       guidance_rescale=float(rescale))


#: the keys of ``[sampler]`` that are not the sampler's own options
SAMPLER_TABLE_KEYS = ("name", "steps", "guidance", "guidance_interval", "guidance_rescale")


def _guidance_interval(value: Any, source: str) -> tuple[float, float] | None:
    """``[lo, hi]`` with 0 <= lo < hi (hi may be inf), or None when unset."""
    if value is None:
        return None
    numbers = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in value)
    if not numbers or not 0 <= value[0] < value[1] or value[0] == float("inf"):
        raise RecipeError(source, "sampler.guidance_interval", f"{value!r} is not valid: expected [lo, hi] with "
                          "0 <= lo < hi (Karras' sigma; hi may be inf), e.g. [0.28, 5.42]", value)
    return float(value[0]), float(value[1])
