"""``gentool invert RUN IMAGES...``: the ``invert`` task from the command line (registered by the command hook).

Cheap to import: torch and the run are loaded inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from gentool import SOURCE_HELP, default_out


def invert(
    source: Path = typer.Argument(..., help=SOURCE_HELP),
    images: Optional[List[str]] = typer.Argument(None, help="Image files to invert [default: test images --indices]."),
    steps: Optional[int] = typer.Option(None, "--steps", help="DDIM steps each way [default: 100, or T if fewer]; the error falls as they grow."),
    indices: str = typer.Option("0,1,2,3", "--indices", help="Data-set positions when no IMAGES are given, e.g. 0,1,2,3."),
    split: str = typer.Option("test", "--split", help="The data split the indices refer to (train or test)."),
    label: Optional[int] = typer.Option(None, "--label", help="Class for a conditional model [default: each image's own]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write into [default: RUN_DIR/generated/invert, or ./generated/<file stem>/invert for a file outside a run directory]."),
    device: Optional[str] = typer.Option(None, "--device", help="Device, e.g. cpu or cuda [default: the recipe's]."),
    set_: List[str] = typer.Option([], "--set", help="Override a value of the run's recipe (TOML value syntax)."),
) -> None:
    """DDIM inversion (Song et al. 2020, sec. 4.3): map images to x_T, reconstruct them, write latents.pt.

    The latents feed `gentool interpolate RUN --mode slerp --latents .../latents.pt`.
    """
    from gentool import load_run_or_warn  # refuses a run without a readable checkpoint, as sample does
    from gentool import UsageError
    from gentool import ComponentSpec

    try:
        positions = [int(v) for v in indices.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--indices: expected comma-separated integers such as 0,1,2,3, got {indices!r}") from None
    if split not in ("train", "test"):
        raise UsageError(f"--split: expected train or test, got {split!r}")
    run = load_run_or_warn(source, device=device, overrides=set_)
    options = {"indices": positions, "split": split, "images": list(images or []), "label": label, "steps": steps}
    result = run.run_task(ComponentSpec("invert", options), out if out is not None else default_out(source, run, "invert"))
    for f in result.files:
        typer.echo(f"wrote {f}")
    for k, v in result.metrics.items():
        typer.echo(f"{k} = {v:.4g}")
