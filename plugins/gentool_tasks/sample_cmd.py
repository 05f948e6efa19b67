"""``gentool sample``: the ``sample`` task on a trained run, with the command line's conveniences.

Cheap to import (typer only): the run, the task and torch load when the command runs. The images come from
the registered ``sample`` task, so ``gentool sample`` and a recipe's ``[[tasks]] name = "sample"`` are one
code path; this module only parses, picks the output folder and prints.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.markup import escape

from gentool import SOURCE_HELP


def parse_classes(text: str | None) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (``None``: no classes, i.e. all of them; ``","`` is an error)."""
    from gentool import UsageError

    if text is None:
        return []
    try:
        classes = [int(c) for c in text.replace(" ", "").split(",") if c != ""]
    except ValueError:
        raise UsageError(f"--classes must be comma-separated class indices like 0,1,2, got {text!r}") from None
    if not classes:
        raise UsageError(f"--classes names no class: {text!r}; give indices like 0,1,2, or leave it out for all classes")
    return classes


def parse_sampler_options(items: list[str]) -> dict[str, Any]:
    """``["eta=1", "clip_denoised=false"]`` -> ``{"eta": 1, "clip_denoised": False}`` (TOML values)."""
    from gentool import parse_override

    out = {}
    for item in items:
        keys, value = parse_override(item)
        out[".".join(keys)] = value
    return out


def check_fits(run, n: int) -> None:
    """Refuse ``n`` images whose float32 tensors alone (start noise, result, one sampler step) cannot fit."""
    import torch

    from gentool import UsageError

    need = 3 * n * math.prod(run.image_shape) * 4
    if run.device.type == "cuda":
        free = torch.cuda.mem_get_info(run.device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not on this system: let the allocation decide
            return
    if need > free:
        raise UsageError(f"--n {n}: {n:,} images of {'x'.join(map(str, run.image_shape))} need at least "
                         f"{need / 1e9:,.1f} GB on {run.device}, more than the {free / 1e9:,.1f} GB free; "
                         "sample fewer at a time (each with its own --seed)")


def check_classes(run, classes: list[int]) -> None:
    from gentool import UsageError

    if not run.num_classes:
        if classes:
            raise UsageError("--classes given, but this run is unconditional (its recipe has no [conditioner])")
        return
    bad = [c for c in classes if not 0 <= c < run.num_classes]
    if bad:
        raise UsageError(f"--classes must be in 0..{run.num_classes - 1}, got {bad}")


def sample(
    source: Path = typer.Argument(..., help=SOURCE_HELP),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=escape("Registered sampler, e.g. ancestral, ddim, dpmpp_2m [default: the recipe's].")),
    steps: Optional[int] = typer.Option(None, "--steps", help=escape("Sampling steps [default: the recipe's, else the process's default: all T on the discrete chain].")),
    guidance: Optional[float] = typer.Option(None, "--guidance", "-w", help=escape("Classifier-free guidance weight w; 0 is plain conditional sampling [default: the recipe's].")),
    classes: Optional[str] = typer.Option(None, "--classes", help=escape("Comma-separated class indices to cycle through, e.g. 0,1,2 [default: all].")),
    n: int = typer.Option(16, "--n", min=1, help="Number of images."),
    seed: Optional[int] = typer.Option(None, "--seed", help=escape("Seed of the start noise and the sampler [default: the recipe's].")),
    option: List[str] = typer.Option([], "--option", "-O", help="A sampler option, e.g. -O eta=1 (TOML value syntax); repeatable. The recipe's [sampler] options apply only to the recipe's sampler."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=escape("Folder to write into [default: RUN_DIR/generated/<settings>, or ./generated/<file stem>/<settings> for a file outside a run directory].")),
    nrow: Optional[int] = typer.Option(None, "--nrow", help=escape("Images per grid row [default: one column per class].")),
    individual: bool = typer.Option(True, "--individual/--grid-only", help="Also write every image as its own PNG."),
    device: Optional[str] = typer.Option(None, "--device", help=escape("Device, e.g. cpu or cuda [default: the recipe's].")),
    set_: List[str] = typer.Option([], "--set", help="Override a value of the run's recipe (TOML value syntax)."),
    threads: Optional[int] = typer.Option(None, "--threads", help=escape("CPU threads for torch; 0: gentool's default, one per two cores (sets [run] threads).")),
) -> None:
    """Generate images from a trained run and write them as PNGs (a grid and one file per image)."""
    from gentool import require_run, threads_override

    require_run(source)  # before torch's import: a mistyped path or a bad value is told at once
    if nrow is not None and nrow < 1:
        from gentool import UsageError

        raise UsageError(f"--nrow must be at least 1, got {nrow}")
    overrides = [*set_, *threads_override(threads)]
    picked = parse_classes(classes)
    sampler_options = parse_sampler_options(option)
    from gentool import ComponentSpec, SamplingOptions, default_out, load_run_or_warn, plan, print_task_result

    run = load_run_or_warn(source, device=device, overrides=overrides)
    check_classes(run, picked)
    check_fits(run, n)
    resolved = plan(run, SamplingOptions(sampler=sampler, steps=steps, guidance=guidance, seed=seed,
                                         sampler_options=sampler_options,
                                         labels=[0] if run.num_classes else None))
    steps_name = resolved.steps or "all"
    w = resolved.w if run.num_classes else 0.0
    out_dir = out if out is not None else default_out(source, run, f"{resolved.name}_{steps_name}steps_w{w:g}_seed{resolved.seed}")
    options = {"n": n, "classes": picked, "nrow": nrow, "save_individual": individual, "sampler": sampler,
               "steps": steps, "guidance": guidance, "seed": seed, "sampler_options": sampler_options}
    result = run.run_task(ComponentSpec("sample", options), out_dir)
    settings = {"sampler": resolved.name, "steps": steps_name, "guidance": w if run.num_classes else None,
                "seed": resolved.seed, "checkpoint step": run.step}
    typer.echo(", ".join(f"{k} = {v}" for k, v in settings.items() if v is not None))
    grid = [f for f in result.files if f.name == "grid.png"]
    images = [f for f in result.files if f.parent.name == "images"]
    print_task_result(type(result)(files=grid, metrics=result.metrics))
    if images:
        typer.echo(f"wrote {len(images)} images in {images[0].parent}")
