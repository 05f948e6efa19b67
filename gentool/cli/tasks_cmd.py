"""Commands that run a registered task on a trained run: :func:`task_command`.

A plugin adds such a command through the command hook
(``gentool_register_commands``): ``register("inpaint", task_command("inpaint",
"Fill in a masked region..."))``; the built-in tasks plugin does so for its
editing tasks. The command runs the registered task of its name on a run
directory or checkpoint. Its options are the task's own recipe options, read
from the registered function's signature when the command line is built
(defaults and help come from the signature and the docstring's ``Args:``
block), so a task takes the same options in a recipe's ``[[tasks]]`` and
here. The core names no task: which tasks are commands is the plugins' choice.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable, List, Literal, Optional, Union

import typer
from rich.markup import escape

from gentool.cli.app import console, load_run_or_warn
from gentool.cli.output import THREADS_HELP, threads_override
from gentool.cli.sources import SOURCE_HELP, default_out
from gentool.errors import UsageError

SET_HELP = "Override a value of the run's recipe, e.g. --set sampler.steps=100 (TOML value syntax)."


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def cli_type(hint: Any) -> Any | None:
    """The command-line type of an option annotation, or ``None`` if it has none (parsed as TOML)."""
    hint = _unwrap_optional(hint)
    if hint in (int, float, str, bool):
        return hint
    if hint is Path:
        return str
    origin = typing.get_origin(hint)
    if origin is Literal and all(isinstance(a, str) for a in typing.get_args(hint)):
        return hint
    if origin in (list, tuple):
        args = typing.get_args(hint)
        if args and args[0] in (int, float, str):
            return List[args[0]]
    return None


def _fmt(value: Any) -> str:
    return "none" if value is None or value == [] or value == "" else str(value)


def option_parameters(factory: Callable, reserved: set[str]) -> list[inspect.Parameter]:
    """One ``typer.Option`` parameter per keyword-only parameter of ``factory``.

    Every option defaults to ``None`` (not given), so the factory's signature
    stays the only place that holds the defaults; the help shows them.
    """
    from gentool.options import option_docs, recipe_parameters, type_hints  # start-up: when the command is built

    hints, docs = type_hints(factory), option_docs(factory)
    out = []
    for name, p in recipe_parameters(factory).items():
        if name in reserved:
            continue
        kind = cli_type(hints.get(name, p.annotation))
        flag = "--" + name.replace("_", "-")
        doc = docs.get(name, "").replace("``", "")
        help_ = escape(doc if "(default:" in doc else f"{doc} [default: {_fmt(p.default)}]".strip())
        if kind is bool:
            decls, annotation = (f"{flag}/--no-{name.replace('_', '-')}",), Optional[bool]
        else:
            if kind is None:
                help_ += " (a TOML value)"
            decls, annotation = (flag,), Optional[kind if kind is not None else str]
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                     default=typer.Option(None, *decls, help=help_, show_default=False)))
    return out


def parse_option(value: Any, hint: Any) -> Any:
    """Options without a command-line type arrive as text: parse them as TOML values."""
    if cli_type(hint) is not None or not isinstance(value, str):
        return value
    from gentool.recipe import parse_override  # start-up: when the command runs

    return parse_override(f"v={value}")[1]


_OPTIONS_FOR: set[str] | None = None  # None: every task command reads its task's options


def read_options_only_for(commands: list[str]) -> None:
    """Only these commands read their task's options (which loads the plugins, and torch).

    ``gentool.cli.main`` passes the command being run, so ``gentool --help`` and
    ``gentool run`` start without loading any plugin's components.
    """
    global _OPTIONS_FOR
    _OPTIONS_FOR = set(commands)


class TaskCommand:
    """A Typer callback whose signature is ``fixed`` plus the registered task's options (looked up lazily)."""

    def __init__(self, task: str, fixed: list[inspect.Parameter], body: Callable[..., None]):
        self.task, self.fixed, self.body = task, fixed, body
        self.__name__ = self.__qualname__ = task
        self.__annotations__ = {}  # read by typing.get_type_hints; the signature carries the types
        self.__module__ = __name__

    def factory(self) -> Callable | None:
        from gentool.plugins import registry  # start-up: plugins load only when the command is built
        from gentool.registry import RegistryError

        try:
            return registry().get("task", self.task).factory
        except RegistryError:
            return None  # the command still exists and reports the missing task when run

    @property
    def __signature__(self) -> inspect.Signature:
        if _OPTIONS_FOR is not None and self.task not in _OPTIONS_FOR:
            return inspect.Signature(self.fixed)  # not the command being run: its options are not needed
        factory = self.factory()
        extra = option_parameters(factory, {p.name for p in self.fixed}) if factory else []
        return inspect.Signature(self.fixed + extra)

    def __call__(self, **kwargs: Any) -> None:
        fixed = {p.name: kwargs.pop(p.name) for p in self.fixed}
        self.body(self.task, options=kwargs, **fixed)


def checked_options(factory: Callable, given: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line, parsed and validated against the task."""
    from gentool.options import OptionError, check_options, type_hints  # start-up: when the command runs

    hints = type_hints(factory)
    options = {k: parse_option(v, hints.get(k)) for k, v in given.items() if v is not None and v != []}
    try:
        return check_options(factory, options)
    except OptionError as exc:
        raise UsageError(f"--{exc.key.replace('_', '-')}: {exc.message}") from None


def report(result) -> None:
    """Print the files a task wrote and its metrics."""
    for f in result.files:
        console.print(f"[green]wrote[/] {escape(str(f))}", highlight=False, soft_wrap=True)
    for k, v in result.metrics.items():
        console.print(f"{k} = {v:.4g}", highlight=False, soft_wrap=True)


def run_on_checkpoint(task: str, *, options: dict[str, Any], source: Path, out: Optional[Path],
                      device: Optional[str], set_: List[str], threads: Optional[int] = None) -> None:
    """Load the run, check the options, run the task into ``out`` (default: ``RUN_DIR/generated/<task>``,
    beside the ``RUN_DIR/<task>`` folders the recipe's own tasks wrote during ``gentool run``; for a file outside
    a run directory, ``./generated/<file stem>/<task>``: see :func:`gentool.cli.sources.default_out`)."""
    from gentool.recipe import ComponentSpec  # start-up: when the command runs
    run = load_run_or_warn(source, device=device, overrides=[*set_, *threads_override(threads)])
    factory = run.registry.get("task", task).factory
    spec = ComponentSpec(task, checked_options(factory, options))
    report(run.run_task(spec, out if out is not None else default_out(source, run, task)))


def _param(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


RUN_PARAMS = [
    _param("source", typer.Argument(..., help=SOURCE_HELP), Path),
    _param("out", typer.Option(None, "--out", "-o", help=escape("Folder to write into [default: RUN_DIR/generated/<command>, "
                                                                "or ./generated/<file stem>/<command> for a file outside a run "
                                                                "directory].")), Optional[Path]),
    _param("device", typer.Option(None, "--device", help=escape("Device, e.g. cpu or cuda [default: the recipe's].")), Optional[str]),
    _param("set_", typer.Option([], "--set", help=SET_HELP), List[str]),
    _param("threads", typer.Option(None, "--threads", help=THREADS_HELP), Optional[int]),
]

def task_command(task: str, help: str) -> Callable[..., None]:
    """A command running the registered task ``task`` on a trained run, for ``register(name, ...)`` of the command hook.

    ``help`` is its summary in ``gentool --help``; its options are the task's
    (read from the registry when the command is built), plus the source run,
    ``--out``, ``--device`` and ``--set``.
    """
    command = TaskCommand(task, RUN_PARAMS, run_on_checkpoint)
    command.__doc__ = f"{help} Options are the task's recipe options."
    return command
