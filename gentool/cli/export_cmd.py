"""``gentool export``: a run's EMA weights as safetensors (with its recipe), or as a diffusers pipeline folder."""

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
    dest: Optional[Path] = typer.Argument(None, metavar="[OUT]", help="Output file or, for diffusers, folder "
                                          "(the same as --out)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output file (default: RUN_DIR/<name>_step<step>.safetensors) or, "
                                            "with --format diffusers, folder (default: RUN_DIR/diffusers)."),
    format: str = typer.Option("safetensors", "--format", "-f",
                               help="safetensors: one file that `gentool sample` and gentool.load_run load; "
                                    "diffusers: a folder that diffusers' DDPMPipeline and DDIMPipeline load."),
    device: str = typer.Option("cpu", help="Device that builds the network for the diffusers check."),
) -> None:
    """Write the EMA weights as .safetensors (gentool) or as a diffusers DDPMPipeline folder."""
    from gentool.errors import UsageError
    from gentool.paths import require_run

    require_run(source)  # before torch's import
    if dest is not None and out is not None and dest != out:
        raise UsageError(f"two outputs given: {dest} and --out {out}; give one")
    out = out if out is not None else dest
    if format not in ("safetensors", "diffusers"):
        raise UsageError(f"--format {format!r}: choose safetensors or diffusers")
    if format == "diffusers":
        from gentool.cli.app import load_run_or_warn
        from gentool.engine.export_diffusers import export_run

        run = load_run_or_warn(source, device=device, overrides=[])
        with err.status(f"exporting {escape(str(source))} to diffusers"):
            path = export_run(run, out if out is not None else run.run_dir / "diffusers")
        console.print(f"[green]wrote[/] {escape(str(path))} (diffusers DDPMPipeline / DDIMPipeline .from_pretrained)")
        return
    from gentool.engine.export import export_weights

    path = export_weights(source, out, on_bad=lambda m: err.print(f"warning: {m}", highlight=False, markup=False))
    console.print(f"[green]wrote[/] {escape(str(path))}")
