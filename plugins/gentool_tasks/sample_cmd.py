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
    guidance: Optional[float] = typer.Option(None, "--guidance", "-w", help=escape("Guidance weight w: classifier-free, or with --guide-with autoguidance; 0 is unguided [default: the recipe's].")),
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
    guide_with: Optional[Path] = typer.Option(None, "--guide-with", help="Autoguidance (Karras et al. 2024): guide with this weaker model of the same process, a run directory or checkpoint (e.g. an earlier checkpoint of the run); -w is then D_good + w (D_good - D_bad), the paper's w minus 1. Works for unconditional models."),
    best: bool = typer.Option(False, "--best", help="Use the best cell of the run's evaluation grid (RUN/eval/best.json, written by gentool eval over a grid): its EMA weights, sampler, steps and guidance; options given here win."),
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
    from gentool import (ComponentSpec, SamplingOptions, best_settings, default_out, load_run_or_warn, plan,
                         print_task_result)

    interval = None
    if best:  # the evaluation grid's best cell: its weights and settings, the options given here winning
        source, chosen = best_settings(source, sampler=sampler, steps=steps, guidance=guidance, guide_with=guide_with)
        sampler, steps, guidance = chosen["sampler"], chosen["steps"], chosen["guidance"]
        guide_with, interval = chosen["guide_with"], chosen["guidance_interval"]
        typer.echo(f"the best cell of the run's evaluation grid: weights {source}")
    run = load_run_or_warn(source, device=device, overrides=overrides)
    check_classes(run, picked)
    check_fits(run, n)
    request = SamplingOptions(sampler=sampler, steps=steps, guidance=guidance, seed=seed, guide_with=guide_with,
                              sampler_options=sampler_options, guidance_interval=interval,
                              labels=[0] if run.num_classes else None)
    resolved = plan(run, request)
    steps_name = resolved.steps or "all"
    auto = guide_with is not None
    w = resolved.w if run.num_classes or auto else 0.0
    name = f"{'best_' if best else ''}{resolved.name}_{steps_name}steps_w{w:g}{'auto' if auto else ''}_seed{resolved.seed}"
    out_dir = out if out is not None else default_out(source, run, name)
    options = {"n": n, "classes": picked, "nrow": nrow, "save_individual": individual, "sampler": sampler,
               "steps": steps, "guidance": guidance, "seed": seed, "sampler_options": sampler_options,
               "guide_with": None if guide_with is None else str(guide_with),
               "guidance_interval": list(interval) if interval else []}
    result = run.run_task(ComponentSpec("sample", options), out_dir)
    settings = {"sampler": resolved.name, "steps": steps_name, "guidance": w if run.num_classes or auto else None,
                "autoguided by": guide_with, "guidance interval": interval, "seed": resolved.seed,
                "checkpoint step": run.step}
    typer.echo(", ".join(f"{k} = {v}" for k, v in settings.items() if v is not None))
    grid = [f for f in result.files if f.name == "grid.png"]
    images = [f for f in result.files if f.parent.name == "images"]
    print_task_result(type(result)(files=grid, metrics=result.metrics))
    if images:
        typer.echo(f"wrote {len(images)} images in {images[0].parent}")
