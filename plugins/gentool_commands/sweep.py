"""``gentool sweep RECIPE --set KEY=A,B ...``: train the variants in turn (resumable), then compare them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def sweep(
    recipes: List[Path] = typer.Argument(..., help="Recipe TOML file(s); several are one more axis of the sweep "
                                         "(e.g. DDPM, flow matching and EDM recipes side by side)."),
    set_: List[str] = typer.Option([], "--set", help="KEY=A,B,...: one sweep axis (TOML values, comma-separated; "
                                   "a single value overrides every variant). Variants are the product of the axes."),
    variant: Optional[int] = typer.Option(None, "--variant", help="Run only this variant (0-based), e.g. a job "
                                          "array's index, then `gentool compare` the folders."),
    device: Optional[str] = typer.Option(None, help="Override the recipe's run.device (cpu, cuda, cuda:N)."),
    tasks: bool = typer.Option(True, "--tasks/--no-tasks", help="Run the recipe's tasks after each variant trains."),
    svg: bool = typer.Option(False, "--svg", help="Also write the comparison figure as SVG."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON at the end."),
) -> None:
    """Train the product of --set variants into <output_dir>/<name>/<variant>, one after another, then compare.

    Several recipe files are one more axis: each variant is one of them (with the --set values), in
    <output_dir>/<stem1+stem2+...>/<stem,...>.

    Stopped (Ctrl-C, a killed job), the same command skips the finished
    variants and resumes the interrupted one. In parallel: one process (or
    torchrun) per --variant I, then gentool compare <output_dir>/<name>/*/.
    """
    from rich.console import Console

    from gentool import distributed_env as env
    from gentool import run_sweep
    from gentool_commands.compare import print_comparison

    from gentool import stderr as err  # the bars' console: a line logged during a live bar goes above it
    result = run_sweep(recipes[0] if len(recipes) == 1 else recipes, set_, only=variant, device=device, run_tasks=tasks, compare_svg=svg,
                       log=lambda m: err.print(m, highlight=False, soft_wrap=True, markup=False))
    if not env().main:
        return
    if result.interrupted:
        err.print(f"sweep stopped; run the same command again to continue ({result.folder})", markup=False)
        raise typer.Exit(128 + result.signal)
    if result.comparison is None:
        return
    if as_json:
        typer.echo(json.dumps(result.comparison.to_json(), indent=1))
    else:
        print_comparison(result.comparison, Console())
        Console().print(f"sweep folder: {result.folder}", markup=False, highlight=False)
