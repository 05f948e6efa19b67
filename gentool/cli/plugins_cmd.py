"""``gentool list-plugins``: what is installed, and what is broken."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from gentool.cli.app import app, console


def plugin_rows() -> list[dict]:
    """One row per registered component: kind, name, plugin, package, version, module, summary.

    The summary is the first line of the factory's docstring with reStructuredText
    inline code (````x````) written as Markdown (```x```), as in ``docs/recipes.md``.
    """
    from gentool.docs import _md
    from gentool.plugins import state

    st = state()
    info = {p.name: p for p in st.plugins}
    rows = []
    for comp in st.registry.components():
        p = info.get(comp.plugin)
        rows.append({
            "kind": comp.kind,
            "name": comp.name,
            "plugin": comp.plugin,
            "package": p.package if p else "",
            "version": p.version if p else "",
            "module": p.module if p else "",
            "summary": _md(comp.summary),
        })
    return rows


@app.command("list-plugins")
def list_plugins(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {kind, name, plugin, ...}."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the traceback of each broken plugin."),
    docs: bool = typer.Option(False, "--docs", help="Print the recipe reference (Markdown) of every loaded component."),
    builtin: bool = typer.Option(False, "--builtin", help="With --docs: only gentool's built-in plugins (docs/recipes.md)."),
) -> None:
    """List installed plugins and the components each provides; broken plugins are marked."""
    from gentool.plugins import state

    if docs:
        from gentool.docs import recipe_reference

        print(recipe_reference(builtin_only=builtin), end="")
        return
    st = state()
    rows = plugin_rows()
    if as_json:
        broken = [{"kind": "broken", "name": b.name, "plugin": b.name, "package": b.package,
                   "version": b.version, "error": b.error} for b in st.broken]
        print(json.dumps(rows + broken, indent=2))
        return
    if not console.is_terminal:  # a log file or a pipe: one plain line per plugin and component, never a table
        print_plain(st, rows)
    else:
        print_tables(st, rows)
    if st.blocked:
        console.print(f"blocked: {', '.join(st.blocked)}")
    if st.broken and not verbose:
        console.print(f"{len(st.broken)} plugin(s) failed to load; `gentool list-plugins --verbose` shows why.")
    for b in st.broken if verbose else []:
        console.rule(f"[red]{b.name}[/] ({b.package} {b.version})")
        console.print(b.detail or b.error, markup=False, highlight=False)


def print_plain(st, rows: list[dict]) -> None:
    """``plugin NAME (PACKAGE VERSION, MODULE): KINDS`` and ``KIND NAME (plugin P): SUMMARY`` lines."""
    for p in st.plugins:
        provides = sorted({r["kind"] for r in rows if r["plugin"] == p.name})
        console.print(f"plugin {p.name} ({p.package} {p.version}, {p.module}): {', '.join(provides)}",
                      markup=False, highlight=False)
    for b in st.broken:
        console.print(f"plugin {b.name} ({b.package} {b.version}): BROKEN: {b.error}", markup=False, highlight=False)
    for r in rows:
        console.print(f"{r['kind']} {r['name']} (plugin {r['plugin']}): {r['summary']}", markup=False, highlight=False)


def print_tables(st, rows: list[dict]) -> None:
    plugins = Table(title="plugins", title_justify="left")
    for col in ("plugin", "package", "version", "module", "provides"):
        plugins.add_column(col)
    for p in st.plugins:
        provides = sorted({f"{r['kind']}" for r in rows if r["plugin"] == p.name})
        plugins.add_row(p.name, p.package, p.version, p.module, ", ".join(provides))
    for b in st.broken:
        plugins.add_row(Text(b.name, style="red"), b.package, b.version, "", Text(f"BROKEN: {b.error}", style="red"))
    console.print(plugins)
    comps = Table(title="components", title_justify="left")
    for col in ("kind", "name", "plugin", "summary"):
        comps.add_column(col)
    for r in rows:
        comps.add_row(r["kind"], r["name"], r["plugin"], Text(r["summary"]))
    console.print(comps)
