"""``gentool compare RUN_DIR...``: the runs' metrics in one figure and their final values in a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def print_comparison(comparison, console) -> None:
    """A rich table: one row per run (its label), the last step and the last value of each metric."""
    from rich.table import Table
    from rich.text import Text

    tests = any(k.startswith("test_loss/") for k in comparison.metrics)
    table = Table(title="final values", title_justify="left",
                  caption="t=...: the test loss at that 0-based timestep" if tests else None, caption_justify="left")
    table.add_column("run", min_width=min(max((len(r.label) for r in comparison.runs), default=3), 40))
    table.add_column("step", justify="right")
    for key in comparison.metrics:
        table.add_column(key.replace("test_loss/", "").replace("eval/", ""), justify="right", overflow="fold")
    for run in comparison.runs:
        values = [f"{run.final[k]:.4g}" if k in run.final else "-" for k in comparison.metrics]
        table.add_row(Text(run.label), str(run.last_step), *values)
    console.print(table)
    for path in comparison.figures:
        console.print(Text(f"wrote {path}", style="green"))


def compare(
    runs: List[Path] = typer.Argument(..., help="Run directories to compare (two or more)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Figure file (default: compare.png in the runs' "
                                       "common parent folder, else in the current folder)."),
    svg: bool = typer.Option(False, "--svg", help="Also write the figure as SVG beside the PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON (labels, differences, "
                                 "final values, figure paths) instead of a table."),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="Draw the figure (--no-figure: table only)."),
) -> None:
    """Overlay runs' training loss, test losses and eval metrics against step; name each run by what differs."""
    from rich.console import Console

    from gentool import run_compare

    result = run_compare(runs, out, svg=svg, figure=figure)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
    else:
        print_comparison(result, Console())
