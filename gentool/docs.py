"""Generated documentation: the recipe reference.

The page is built from the code itself, so it cannot drift from it: from
every component factory's signature (types, defaults) and the ``Args:`` block
of its docstring (descriptions), plus the core tables of :mod:`gentool.config`.
The CLI reference is built from the Typer application by
:mod:`gentool.cli.reference` (the command line sits above this module).
``tests/test_docs.py`` fails when ``docs/recipes.md`` or ``docs/cli.md``
differ from what is generated. Regenerate both with::

    python -m gentool.cli.reference

``gentool list-plugins --docs`` prints the recipe reference of every
installed plugin (``--builtin``: gentool's own, as in ``docs/recipes.md``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from typing import Any, Callable

from gentool.kinds import BY_NAME, KINDS
from gentool.config import EvalConfig, RunConfig, TrainConfig
from gentool.options import describe, option_docs, recipe_parameters, type_hints
from gentool.plugins import load_plugins, state
from gentool.recipe import SamplerSpec

REGENERATE = "python -m gentool.cli.reference"
#: kind -> (section title, the recipe table it fills, how the core calls the factory), from the table of kinds
KIND_SECTIONS = {k.name: (k.title, k.where, k.call) for k in KINDS if k.options}
#: The keys every ``[sampler]`` table has besides the sampler's own options
#: (fields of :class:`gentool.recipe.SamplerSpec`).
SAMPLER_KEYS = {
    "steps": ("int", "(unset)", "number of sampling steps (network evaluations' worth); unset: every timestep."),
    "guidance": ("float", "0.0", "classifier-free guidance weight w: eps = (1 + w) eps(x, c) - w eps(x, null); "
                 "0 is plain conditional sampling (Ho and Salimans 2022)."),
    "guidance_interval": ("list of float", "(unset)", "`[lo, hi]`: guide only where Karras' sigma = sigma / alpha "
                          "is in (lo, hi] (Kynkaanniemi et al. 2024; EDM2 uses e.g. [0.28, 5.42]), elsewhere the "
                          "conditional prediction alone (one network evaluation); unset: everywhere."),
    "guidance_rescale": ("float", "0.0", "CFG rescale phi in [0, 1] (Lin et al. 2024, sec. 3.4): the guided v "
                         "prediction is scaled to the conditional one's standard deviation per image and mixed, "
                         "phi rescaled + (1 - phi) guided; 0: off (0.7 in the paper)."),
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
    kind = BY_NAME[component.kind]
    return out + options_table(factory, kind.reserved + kind.supplied) + [""]


def recipe_reference(builtin_only: bool = True) -> str:
    """The recipe reference as Markdown.

    ``builtin_only`` documents gentool's built-in plugins whatever is
    installed or blocked (this is ``docs/recipes.md``); otherwise every plugin
    loaded in this environment, each component labelled with its package.
    """
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


if __name__ == "__main__":  # the old command: point at the new one
    raise SystemExit(f"the generated pages are now written by `{REGENERATE}`")
