"""``gentool ema RUN --sigma-rel S``: post-hoc EMA, the weights of any EMA length from the run's snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _floats(text: str) -> list[float]:
    from gentool import UsageError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--using {text!r}: give tracked sigma_rels separated by commas, e.g. 0.05,0.1") from None


def ema(
    run: Path = typer.Argument(..., help="Run directory trained with train.phema_sigma_rels set."),
    sigma_rel: float = typer.Option(..., "--sigma-rel", "-s", help="The EMA length to reconstruct: the profile's "
                                    "standard deviation relative to the training time, in (0, 0.2887]."),
    step: Optional[int] = typer.Option(None, "--step", help="Reconstruct at this snapshot step (default: the last)."),
    using: Optional[str] = typer.Option(None, "--using", help="Combine only the snapshots of these tracked "
                                        "sigma_rels (comma-separated; default: all)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Checkpoint file to write (default: "
                                       "RUN/checkpoints/phema-<sigma_rel>-step_<step>.pt)."),
) -> None:
    """Reconstruct the power-function EMA of --sigma-rel from the run's post-hoc EMA snapshots (Karras et al. 2024).

    Writes a checkpoint that gentool sample, eval and export load, and prints how well the
    snapshots' profiles fit the one asked for (the relative L2 error of the least-squares fit).
    """
    from rich.console import Console
    from rich.markup import escape

    from gentool import reconstruct_ema as reconstruct

    result = reconstruct(run, sigma_rel, step=step, using=_floats(using) if using is not None else None, out=out)
    tracked = sorted({s.sigma_rel for s in result.inputs})
    console = Console(soft_wrap=True)
    console.print(f"sigma_rel {result.sigma_rel:g} (gamma {result.gamma:.3f}) at step {result.step}, from "
                  f"{len(result.inputs)} snapshots of sigma_rel {', '.join(f'{s:g}' for s in tracked)}",
                  highlight=False)
    console.print(f"profile fit: relative L2 error {result.solution.fit_error:.3g}", highlight=False)
    console.print(f"[green]wrote[/] {escape(str(result.path))}", highlight=False)
    # --out: in its run directory, the samples would go where the run's own go under the same settings
    console.print(f"sample it with: gentool sample {escape(str(result.path))} --out FOLDER", highlight=False)
