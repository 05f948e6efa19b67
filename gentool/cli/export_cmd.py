"""``gentool export``: a run's EMA weights as safetensors, with its recipe in the metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from gentool.cli.app import app, console, err, friendly


@app.command()
@friendly
def export(
    source: Path = typer.Argument(..., help="Run directory (its newest good checkpoint) or a checkpoint file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output file (default: RUN_DIR/<name>_step<step>.safetensors)."),
) -> None:
    """Write the EMA weights as a .safetensors file that `gentool sample` and gentool.load_run can load."""
    from gentool.engine.export import export_weights

    path = export_weights(source, out, on_bad=lambda m: err.print(f"warning: {m}", highlight=False, markup=False))
    console.print(f"[green]wrote[/] {escape(str(path))}")
