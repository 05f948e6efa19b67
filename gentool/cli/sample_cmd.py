"""``gentool sample``: generate images from a trained run with any sampler, steps and guidance."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.markup import escape

from gentool.cli.app import app, console, friendly, load_run_or_warn
from gentool.cli.output import THREADS_HELP, threads_override
from gentool.cli.sources import SOURCE_HELP, default_out
from gentool.errors import UsageError


@dataclass
class Generated:
    """What :func:`generate` wrote: the grid, the single images and the settings used."""

    grid: Path
    images: list[Path] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def parse_classes(text: str | None) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (``None``: no classes, i.e. all of them; ``","`` is an error)."""
    if text is None:
        return []
    try:
        classes = [int(c) for c in text.replace(" ", "").split(",") if c != ""]
    except ValueError:
        raise UsageError(f"--classes must be comma-separated class indices like 0,1,2, got {text!r}") from None
    if not classes:
        raise UsageError(f"--classes names no class: {text!r}; give indices like 0,1,2, or leave it out for all classes")
    return classes


def check_fits(run, n: int) -> None:
    """Refuse ``n`` images whose float32 tensors alone (start noise, result, one sampler step) cannot fit."""
    import torch  # start-up: torch loads only when a command runs

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


def parse_sampler_options(items: list[str]) -> dict[str, Any]:
    """``["eta=1", "clip_denoised=false"]`` -> ``{"eta": 1, "clip_denoised": False}`` (TOML values)."""
    from gentool.recipe import parse_override  # start-up: when the command runs

    out = {}
    for item in items:
        keys, value = parse_override(item)
        out[".".join(keys)] = value
    return out


def labels_for(run, n: int, classes: list[int]):
    """Labels ``[n]`` cycling through ``classes`` (all classes when empty), or None if unconditional."""
    import torch  # start-up: torch loads only when a command runs

    if not run.num_classes:
        if classes:
            raise UsageError("--classes given, but this run is unconditional (its recipe has no [conditioner])")
        return None
    bad = [c for c in classes if not 0 <= c < run.num_classes]
    if bad:
        raise UsageError(f"--classes must be in 0..{run.num_classes - 1}, got {bad}")
    pool = classes or list(range(run.num_classes))
    return torch.tensor([pool[i % len(pool)] for i in range(n)])


def generate(
    run,
    out_dir: Path,
    *,
    n: int = 16,
    classes: list[int] = (),
    guidance: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    sampler_options: dict[str, Any] | None = None,
    nrow: int | None = None,
    individual: bool = True,
    progress: bool = True,
    guide_with: Any = None,
    guidance_interval: tuple[float, float] | None = None,
) -> Generated:
    """Sample ``n`` images from ``run`` into ``out_dir``: ``grid.png`` and ``images/*.png``.

    Labels cycle through ``classes``, so with the default ``nrow`` (the number
    of classes) each column of the grid is one class. ``guide_with`` (a run
    directory or checkpoint) autoguides by that weaker model with weight w.
    """
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if nrow is not None and nrow < 1:
        raise UsageError(f"--nrow must be at least 1, got {nrow}")
    check_fits(run, n)
    labels, w = run.sampling_inputs(labels_for(run, n, list(classes)), None if guide_with else guidance)
    w = w if guide_with is None or guidance is None else guidance  # autoguidance: any model, any labels
    name = sampler or run.recipe.sampler.name
    x = run.sample(n, labels=labels, guidance=w, steps=steps, sampler=name,
                   sampler_options=sampler_options, generator=run.generator(seed), progress=progress,
                   description=f"{name} ({n} images)", guide_with=guide_with, guidance_interval=guidance_interval)
    from gentool.images import save_grid, save_images  # start-up: when the command runs

    out_dir = Path(out_dir)
    if nrow is None and labels is not None:
        nrow = len(classes) or run.num_classes
    result = Generated(save_grid(x, out_dir / "grid.png", nrow=nrow))
    if individual:
        for i, path in enumerate(save_images(x, out_dir / "images")):
            target = path.with_name(f"{i:05d}_class{int(labels[i])}.png") if labels is not None else path
            result.images.append(path.rename(target))
    result.settings = {"sampler": name, "steps": steps or run.recipe.sampler.steps or "all",
                       "guidance": w if labels is not None or guide_with else None,
                       "autoguided by": guide_with, "guidance interval": guidance_interval,
                       "seed": run.recipe.run.seed if seed is None else seed, "checkpoint step": run.step}
    return result


def settings_name(run, sampler: str | None, steps: int | None, guidance: float | None, seed: int | None,
                  auto: bool = False) -> str:
    """The default output folder's name, from the settings: ``ddim_100steps_w2_seed0`` (``w2auto``: autoguided)."""
    name = sampler or run.recipe.sampler.name
    _, w = run.sampling_inputs(labels_for(run, 1, []), None if auto else guidance)  # as generate() resolves it
    w = guidance if auto and guidance is not None else w
    seed = run.recipe.run.seed if seed is None else seed
    return f"{name}_{steps or run.recipe.sampler.steps or 'all'}steps_w{w:g}{'auto' if auto else ''}_seed{seed}"


@app.command()
@friendly
def sample(
    source: Path = typer.Argument(..., help=SOURCE_HELP),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=escape("Registered sampler, e.g. ancestral, ddim, dpmpp_2m [default: the recipe's].")),
    steps: Optional[int] = typer.Option(None, "--steps", help=escape("Network evaluations [default: the recipe's, else all T].")),
    guidance: Optional[float] = typer.Option(None, "--guidance", "-w", help=escape("Guidance weight w: classifier-free, or with --guide-with autoguidance; 0 is unguided [default: the recipe's].")),
    classes: Optional[str] = typer.Option(None, "--classes", help=escape("Comma-separated class indices to cycle through, e.g. 0,1,2 [default: all].")),
    n: int = typer.Option(16, "--n", min=1, help="Number of images."),
    seed: Optional[int] = typer.Option(None, "--seed", help=escape("Seed of the start noise and the sampler [default: the recipe's].")),
    option: List[str] = typer.Option([], "--option", "-O", help="A sampler option, e.g. -O eta=1 (TOML value syntax); repeatable."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=escape("Folder to write into [default: RUN_DIR/generated/<settings>, or ./generated/<file stem>/<settings> for a file outside a run directory].")),
    nrow: Optional[int] = typer.Option(None, "--nrow", help=escape("Images per grid row [default: one column per class].")),
    individual: bool = typer.Option(True, "--individual/--grid-only", help="Also write every image as its own PNG."),
    device: Optional[str] = typer.Option(None, "--device", help=escape("Device, e.g. cpu or cuda [default: the recipe's].")),
    set_: List[str] = typer.Option([], "--set", help="Override a value of the run's recipe (TOML value syntax)."),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
    guide_with: Optional[Path] = typer.Option(None, "--guide-with", help="Autoguidance (Karras et al. 2024): guide with this weaker model of the same process, a run directory or checkpoint (e.g. an earlier checkpoint of the run); -w is then D_good + w (D_good - D_bad), the paper's w minus 1. Works for unconditional models."),
    best: bool = typer.Option(False, "--best", help="Use the best cell of the run's evaluation grid (RUN/eval/best.json, written by gentool eval over a grid): its EMA weights, sampler, steps and guidance; options given here win."),
) -> None:
    """Generate images from a trained run and write them as PNGs (a grid and one file per image)."""
    overrides = [*set_, *threads_override(threads)]
    chosen = {}
    if best:
        from gentool.evaluation.best import best_settings  # start-up: when the command runs

        source, chosen = best_settings(source, sampler=sampler, steps=steps, guidance=guidance, guide_with=guide_with)
        sampler, steps, guidance, guide_with = (chosen.pop(k) for k in ("sampler", "steps", "guidance", "guide_with"))
        console.print(f"the best cell of the run's evaluation grid: weights {escape(str(source))}", highlight=False,
                      soft_wrap=True)
    run = load_run_or_warn(source, device=device, overrides=overrides)
    out_dir = out if out is not None else default_out(
        source, run, ("best_" if best else "") + settings_name(run, sampler, steps, guidance, seed, guide_with is not None))
    result = generate(run, out_dir, n=n, classes=parse_classes(classes), guidance=guidance, sampler=sampler,
                      steps=steps, seed=seed, sampler_options=parse_sampler_options(option), nrow=nrow,
                      individual=individual, guide_with=guide_with, **chosen)
    console.print(", ".join(f"{k} = {v}" for k, v in result.settings.items() if v is not None), highlight=False)
    console.print(f"[green]wrote[/] {escape(str(result.grid))}", highlight=False, soft_wrap=True)
    if result.images:
        console.print(f"[green]wrote[/] {len(result.images)} images in {escape(str(result.images[0].parent))}",
                      highlight=False, soft_wrap=True)
