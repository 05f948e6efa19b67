"""Generated documentation: the recipe reference and the CLI reference.

Both pages are built from the code itself, so they cannot drift from it: the
recipe reference from every component factory's signature (types, defaults)
and the ``Args:`` block of its docstring (descriptions), plus the core tables
of :mod:`gentool.config`; the CLI reference from the Typer application.
``tests/test_docs.py`` fails when ``docs/recipes.md`` or ``docs/cli.md``
differ from what this module generates. Regenerate both with::

    python -m gentool.docs

``gentool list-plugins --docs`` prints the recipe reference of every
installed plugin (``--builtin``: gentool's own, as in ``docs/recipes.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

from gentool.kinds import KINDS
from gentool.options import describe, option_docs, recipe_parameters, type_hints

REGENERATE = "python -m gentool.docs"
#: kind -> (section title, the recipe table it fills, how the core calls the factory), from the table of kinds
KIND_SECTIONS = {k.name: (k.title, k.where, k.call) for k in KINDS if k.options}
#: The keys every ``[sampler]`` table has besides the sampler's own options
#: (fields of :class:`gentool.recipe.SamplerSpec`).
SAMPLER_KEYS = {
    "steps": ("int", "(unset)", "number of sampling steps (network evaluations' worth); unset: every timestep."),
    "guidance": ("float", "0.0", "classifier-free guidance weight w: eps = (1 + w) eps(x, c) - w eps(x, null); "
                 "0 is plain conditional sampling (Ho and Salimans 2022)."),
}


def _md(text: str) -> str:
    """reStructuredText inline code (````x````, ``:class:`x```) as Markdown (```x```)."""
    return re.sub(r":(?:class|func|meth|mod|data|attr):`", "`", text.replace("``", "`"))


def _cell(text: str) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def toml_value(value: Any) -> str:
    """A default as it would be written in a recipe (``(unset)`` for None)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, str)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return repr(value)


def _default(param: inspect.Parameter) -> str:
    if param.default is not inspect.Parameter.empty:
        return f"`{toml_value(param.default)}`"
    return "**required**"


def _dataclass_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return inspect.Parameter.empty


def options_table(factory: Callable[..., Any], reserved: tuple[str, ...] = ()) -> list[str]:
    """Markdown rows ``| key | type | default | description |`` of a factory's options."""
    params = {k: p for k, p in recipe_parameters(factory).items() if k not in reserved}
    if not params:
        return ["No options."]
    hints, docs = type_hints(factory), option_docs(factory)
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, p in params.items():
        kind = describe(hints.get(name, p.annotation))
        if dataclasses.is_dataclass(factory):
            default = _dataclass_default({f.name: f for f in dataclasses.fields(factory)}[name])
            default_text = "**required**" if default is inspect.Parameter.empty else f"`{toml_value(default)}`"
        else:
            default_text = _default(p)
        text = docs.get(name, "*(undocumented)*")
        rows.append(f"| `{name}` | `{_cell(kind)}` | {_cell(default_text)} | {_cell(text)} |")
    return rows


def docstring_parts(obj: Any) -> tuple[str, str]:
    """``(summary, body)`` of a docstring: its first paragraph, and the rest up to ``Args:``."""
    doc = inspect.getdoc(obj) or ""
    head, _, rest = doc.partition("\n\n")
    summary = " ".join(line.strip() for line in head.splitlines())
    body: list[str] = []
    for line in rest.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:", "Returns:", "Raises:"):
            break
        body.append(line)
    return _md(summary), _md("\n".join(body).strip())


def _config_section(title: str, cls: type) -> list[str]:
    summary, body = docstring_parts(cls)
    out = [f"## {title}", "", summary, ""]
    if body:
        out += [body, ""]
    return out + options_table(cls) + [""]


def _component_section(component: Any, source: str) -> list[str]:
    summary, body = docstring_parts(component.factory)
    factory = component.factory
    where = f"`{factory.__module__}.{getattr(factory, '__qualname__', type(factory).__name__)}`"
    out = [f"### `{component.name}`", "", summary, ""]
    if body:
        out += [body, ""]
    out += [f"*{source}: {where}*", ""]
    reserved = ("steps", "t_start", "generator", "callback") if component.kind == "sampler" else ()
    return out + options_table(factory, reserved) + [""]


def recipe_reference(builtin_only: bool = True) -> str:
    """The recipe reference as Markdown.

    ``builtin_only`` documents gentool's built-in plugins whatever is
    installed or blocked (this is ``docs/recipes.md``); otherwise every plugin
    loaded in this environment, each component labelled with its package.
    """
    from gentool.config import EvalConfig, RunConfig, TrainConfig
    from gentool.plugins import load_plugins, state
    from gentool.recipe import SamplerSpec

    st = load_plugins(autoload=False, blocked=[]) if builtin_only else state()
    infos = {p.name: p for p in st.plugins}
    extra = [f.name for f in dataclasses.fields(SamplerSpec) if f.name not in ("name", "options")]
    if sorted(extra) != sorted(SAMPLER_KEYS):
        raise RuntimeError(f"SamplerSpec fields {extra} changed; update SAMPLER_KEYS in {__name__}")

    def source(component) -> str:
        info = infos.get(component.plugin)
        if info is None or info.builtin:
            return "built-in"
        return f"from {info.package} {info.version}"

    out = [
        "# Recipe reference",
        "",
        f"<!-- Generated by `{REGENERATE}` (or `gentool list-plugins --docs --builtin`) from the",
        "     components' signatures and docstrings. Do not edit by hand. -->",
        "",
        "A recipe is a TOML file with one table per component: `name` picks a registered",
        "component and every other key is one of its options, listed below with its type and",
        "default. Unknown keys and wrong types are refused before anything is built",
        "(`gentool check recipe.toml`). Any value can be overridden on the command line:",
        "`--set train.steps=100`. Defaults live only in the code: the tables below are",
        "generated from the factories' signatures and the `Args:` blocks of their docstrings.",
        "",
        "| table | what it configures |",
        "|---|---|",
        "| [`[run]`](#run) | name, seed, device, output folder |",
    ]
    for kind, (title, table, _) in KIND_SECTIONS.items():
        out.append(f"| [`{table}`](#{_anchor(title)}) | {title.lower()} (`name` + options) |")
        if kind == "sampler":
            out += ["| [`[train]`](#train) | the training loop |", "| [`[eval]`](#eval) | metrics during training |"]
    out += ["", *_config_section("[run]", RunConfig)]
    for kind, (title, table, call) in KIND_SECTIONS.items():
        components = st.registry.components(kind)
        what = f"Named by the `{table}` key" if " " in table else f"The `{table}` table"
        out += [f"## {title}", "", f"{what}; the core calls `{call}`.", ""]
        if kind == "sampler":
            out += ["Every `[sampler]` table also has these keys:", "", "| key | type | default | description |",
                    "|---|---|---|---|"]
            out += [f"| `{k}` | `{t}` | `{d}` | {_cell(text)} |" for k, (t, d, text) in SAMPLER_KEYS.items()]
            out.append("")
        if not components:
            out += ["None built in." if builtin_only else "None installed.", ""]
        for component in components:
            out += _component_section(component, source(component))
        if kind == "sampler":
            out += _config_section("[train]", TrainConfig) + _config_section("[eval]", EvalConfig)
    return "\n".join(out).rstrip() + "\n"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


# -- the CLI reference ---------------------------------------------------------

def _type_name(param: Any, ctx: Any) -> str:
    """The parameter's type as ``--help`` shows it (click, or typer's own parser)."""
    if getattr(param, "is_flag", False) and not param.secondary_opts:
        return "flag"
    if hasattr(param, "type") and hasattr(param.type, "name"):
        return param.type.name.lower()
    return str(param.display_type(ctx)).strip("<>").lower()


def _usage(argument: Any) -> str:
    name = argument.name.upper() + ("..." if argument.nargs == -1 else "")
    return name if argument.required else f"[{name}]"


def _param_row(param: Any, ctx: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`"
    else:
        name = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    kind = _type_name(param, ctx)
    if getattr(param, "multiple", False):
        kind = re.sub(r"^list\[(.*)\]$", r"\1", kind) + ", repeatable"
    if param.required:
        default = "**required**"
    elif param.default is None or param.default in ((), []):
        default = ""
    elif isinstance(param.default, bool):
        flag = param.opts[0] if param.default else (param.secondary_opts or ["off"])[0]
        default = f"`{flag}`" if param.secondary_opts else f"`{toml_value(param.default)}`"
    else:
        default = f"`{param.default}`"
    return f"| {name} | {kind} | {default} | {_cell(getattr(param, 'help', None) or '')} |"


def cli_reference() -> str:
    """The CLI reference as Markdown, from the Typer application's commands."""
    import typer

    from gentool.cli import app

    group = typer.main.get_command(app)
    ctx = group.make_context("gentool", [], resilient_parsing=True)
    out = [
        "# CLI reference",
        "",
        f"<!-- Generated by `{REGENERATE}` from the Typer application. Do not edit by hand. -->",
        "",
        _md(group.help or "").strip(),
        "",
        "Every command prints `error: ...` and exits with status 2 on a mistake that is yours to fix",
        "(a bad recipe, a missing file); set `GENTOOL_DEBUG=1` to see the traceback instead.",
        "`gentool COMMAND --help` prints the same information as this page.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    commands = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
    for name, cmd in commands.items():
        summary = " ".join(inspect.cleandoc(cmd.help or "").split("\n\n")[0].split())
        out.append(f"| [`gentool {name}`](#gentool-{name}) | {_cell(summary)} |")
    out.append("")
    for name, cmd in commands.items():
        sub = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        usage = " ".join(["[OPTIONS]"] + [_usage(p) for p in cmd.params if p.param_type_name == "argument"])
        out += [f"## gentool {name}", "", "```console", f"$ gentool {name} {usage}".rstrip(), "```", "",
                _md(inspect.cleandoc(cmd.help or "")), ""]
        params = [p for p in cmd.params if p.name != "help" and not getattr(p, "hidden", False)]
        if params:
            out += ["| argument / option | type | default | description |", "|---|---|---|---|"]
            out += [_param_row(p, sub) for p in params] + [""]
    return "\n".join(out).rstrip() + "\n"


# -- writing the files ---------------------------------------------------------

def generated(docs_dir: Path) -> dict[Path, str]:
    """Every generated page: ``{path: text}``."""
    return {docs_dir / "recipes.md": recipe_reference(builtin_only=True), docs_dir / "cli.md": cli_reference()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description="Regenerate docs/recipes.md and docs/cli.md.")
    parser.add_argument("--docs-dir", type=Path, default=Path("docs"), help="the docs folder (default: docs)")
    parser.add_argument("--check", action="store_true", help="only report stale pages; exit 1 if any")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated(args.docs_dir).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print(f"out of date: {', '.join(map(str, stale))}; run `{REGENERATE}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
