"""``gentool eval``: FID, IS, KID, precision/recall, test loss and bits/dim of a trained run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from gentool.cli.app import app, console, err, friendly, load_run_or_warn
from gentool.cli.output import THREADS_HELP, threads_override
from gentool.cli.sources import SOURCE_HELP, default_out
from gentool.eval_metrics import EVAL_METRICS
from gentool.errors import UsageError
from gentool.paths import require_run


@app.command("eval")
@friendly
def eval_(
    source: Path = typer.Argument(..., help=SOURCE_HELP),
    n: int = typer.Option(50000, "--n", help="Generated images for fid/isc/kid/prc (papers use 50000)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help=escape(f"Comma-separated: {','.join(EVAL_METRICS)} [default: the recipe's [eval] metrics, else fid].")),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=escape("Registered sampler, or several for a grid (dpmpp_2m,heun) [default: [eval] sampler, else the recipe's [sampler]].")),
    steps: Optional[str] = typer.Option(None, "--steps", help=escape("Sampling steps, or several for a grid (10,20) [default: [eval] steps, else the recipe's].")),
    guidance: Optional[str] = typer.Option(None, "--guidance", "-w", help=escape("Guidance weight w, or several (0,1,2: sample metrics for each) [default: the recipe's].")),
    seed: Optional[int] = typer.Option(None, "--seed", help=escape("Seed of the sampling noise [default: the recipe's].")),
    split: Optional[str] = typer.Option(None, "--split", help=escape("Data split the samples are compared with: train or test [default: [eval] split, else train].")),
    feature_extractor: Optional[str] = typer.Option(None, "--feature-extractor", help=escape("Registered or torch-fidelity feature extractor [default: inception-v3-compat].")),
    feature_weights: Optional[Path] = typer.Option(None, "--feature-weights", help="Local weights file of the feature extractor (no download)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=escape("Images per sampling / feature batch [default: [eval] batch_size].")),
    ref_n: Optional[int] = typer.Option(None, "--ref-n", help=escape("Data images behind the reference statistics [default: the whole split].")),
    bpd_timesteps: Optional[int] = typer.Option(None, "--bpd-timesteps", help=escape("bpd: 0 sums all T terms exactly; K estimates from K random terms [default: 0].")),
    data_batches: Optional[int] = typer.Option(None, "--data-batches", help=escape("Test-split batches for loss_t and bpd [default: all].")),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=escape("Report file [default: RUN_DIR/eval/step_<step>.json, or ./generated/<file stem>/eval/step_<step>.json for a file outside a run directory].")),
    save_samples: Optional[Path] = typer.Option(None, "--save-samples", help="Also write the generated images as PNGs into this folder."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help=escape("Folder of cached reference features [default: ~/.cache/gentool/reference].")),
    device: Optional[str] = typer.Option(None, "--device", help=escape("Device, e.g. cpu or cuda [default: the recipe's].")),
    set_: List[str] = typer.Option([], "--set", help="Override a value of the run's recipe (TOML value syntax)."),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
    floor: bool = typer.Option(False, "--floor", help="Also score n real test images against the train split: the real-data floor of each sample metric."),
    ema: Optional[str] = typer.Option(None, "--ema", help="Grid: post-hoc EMA lengths sigma_rel (0.05,0.1), reconstructed from the run's snapshots (gentool ema); run: the checkpoint's own EMA."),
    guide_with: Optional[Path] = typer.Option(None, "--guide-with", help="Grid: the weaker model of autoguidance (a run directory or checkpoint of the same process, e.g. an earlier checkpoint)."),
    guidance_kind: Optional[str] = typer.Option(None, "--guidance-kind", help=escape("Grid: cfg, auto or cfg,auto [default: auto with --guide-with, else cfg].")),
    interval: Optional[str] = typer.Option(None, "--interval", help=escape("Grid: guidance intervals in Karras' sigma, LO:HI or all (all,0.28:2.9) [default: all].")),
    grid: bool = typer.Option(False, "--grid", help="Evaluate as a grid (resumable, with a table, figures and RUN/eval/best.json) even with one value per axis."),
    best_by: Optional[str] = typer.Option(None, "--best-by", help=escape("Grid: the metric that picks the best cell [default: fid, else the first metric].")),
) -> None:
    """Evaluate a trained run; print the JSON report and save it.

    Over a grid (--ema, --guide-with, --guidance-kind, --interval, several --sampler or --steps, or --grid)
    every combination is evaluated into RUN/eval/grid/ (resumable), with a table, figures and the best cell in
    RUN/eval/best.json for gentool sample --best.
    """
    require_run(source)  # before torch's import
    overrides = [*set_, *threads_override(threads)]
    from gentool.evaluation import default_report_path, evaluate, write_report  # start-up: torch-fidelity etc.
    from gentool.evaluation import grid_options as go
    from gentool.evaluation.evaluate import eval_config, parse_guidance
    from gentool.evaluation.grid import Axes
    samplers = go.split(sampler)
    steps_list = go.numbers(steps, "--steps", int, "10,20")
    axes = None
    if go.is_grid(ema=ema, guide_with=guide_with, guidance_kind=guidance_kind, interval=interval, samplers=samplers,
                  steps=steps_list, grid=grid):
        if save_samples is not None or floor:
            raise UsageError("--save-samples and --floor are for a single evaluation; a grid caches each cell's "
                             "samples in its folder (cells/*/samples.safetensors)")
        weights = parse_guidance(guidance)
        axes = Axes(ema=go.ema_lengths(ema), kinds=go.kinds(guidance_kind, guide_with),
                    w=weights if isinstance(weights, list) else [] if weights is None else [weights],
                    intervals=go.intervals(interval), samplers=samplers or [""], steps=steps_list or [None])
    run = load_run_or_warn(source, device=device, overrides=overrides)
    if axes is not None:
        axes.w = axes.w or [run.recipe.sampler.guidance]
        return _grid(run, source, axes, guide_with, best_by, out, cache_dir, n, seed, eval_config(
            run, metrics=go.metrics(run, metrics), split=split, batch_size=batch_size, reference_n=ref_n,
            feature_extractor=go.feature_extractor(run, feature_extractor),
            feature_weights=str(feature_weights) if feature_weights is not None else None))
    steps = steps_list[0] if steps_list else None
    config = eval_config(run, metrics=metrics, sampler=sampler, steps=steps, split=split,
                         feature_extractor=feature_extractor,
                         feature_weights=str(feature_weights) if feature_weights is not None else None,
                         batch_size=batch_size, reference_n=ref_n, bpd_timesteps=bpd_timesteps, data_batches=data_batches)
    report = evaluate(run, config, n=n, guidance=parse_guidance(guidance), seed=seed, cache_dir=cache_dir,
                      save_samples=save_samples, floor=floor,
                      warn=lambda m: err.print(f"[bold yellow]warning:[/] {escape(m)}", highlight=False))
    console.print_json(json.dumps(report))  # first: a report that cannot be written is not lost
    for warning in report.get("warnings", []):  # last, where it is seen: numbers that look like FIDs but are not
        err.print(f"[bold yellow]warning:[/] [bold]{escape(warning)}[/]", highlight=False)
    if out is None:  # RUN_DIR/eval/step_<step>.json, or ./generated/<file stem>/eval/ for a file outside a run
        out = default_out(source, run, "eval", default_report_path(run).name, in_run="")
    path = write_report(report, out)
    err.print(f"[green]wrote[/] {escape(str(path))}", highlight=False, soft_wrap=True)


def _grid(run, source, axes, guide_with, best_by, out, cache_dir, n, seed, config) -> None:
    """``gentool eval`` over a grid: print the table, write it, the figures and the best cell."""
    from gentool.cli.sources import in_run_dir
    from gentool.evaluation.best import best_file  # start-up: the evaluation stack loads when the command runs
    from gentool.evaluation.grid import run_grid
    from gentool.evaluation.grid_report import markdown

    folder = out if out is not None else default_out(source, run, "eval", "grid", in_run="")
    report = run_grid(run, config, axes, n=n, folder=folder, seed=seed, guide_with=guide_with, cache_dir=cache_dir,
                      best_by=best_by, best_file=best_file(run.run_dir) if in_run_dir(run) else None,
                      log=lambda m: err.print(escape(m), highlight=False, soft_wrap=True),
                      warn=lambda m: err.print(f"[bold yellow]warning:[/] {escape(m)}", highlight=False))
    console.print(markdown(report), highlight=False, soft_wrap=True, markup=False)
    for warning in report.get("warnings", []):
        err.print(f"[bold yellow]warning:[/] [bold]{escape(warning)}[/]", highlight=False)
    for path in report["files"]:
        err.print(f"[green]wrote[/] {escape(str(path))}", highlight=False, soft_wrap=True)
