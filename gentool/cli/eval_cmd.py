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
from gentool.paths import require_run


@app.command("eval")
@friendly
def eval_(
    source: Path = typer.Argument(..., help=SOURCE_HELP),
    n: int = typer.Option(50000, "--n", help="Generated images for fid/isc/kid/prc (papers use 50000)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help=escape(f"Comma-separated: {','.join(EVAL_METRICS)} [default: the recipe's [eval] metrics, else fid].")),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=escape("Registered sampler [default: [eval] sampler, else the recipe's [sampler]].")),
    steps: Optional[int] = typer.Option(None, "--steps", help=escape("Sampling steps [default: [eval] steps, else the recipe's].")),
    guidance: Optional[str] = typer.Option(None, "--guidance", "-w", help=escape("Classifier-free guidance weight w, or several (0,1,2: sample metrics for each) [default: the recipe's].")),
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
) -> None:
    """Evaluate a trained run; print the JSON report and save it."""
    require_run(source)  # before torch's import
    overrides = [*set_, *threads_override(threads)]
    from gentool.evaluation import default_report_path, evaluate, write_report  # start-up: torch-fidelity etc.
    from gentool.evaluation.evaluate import eval_config, parse_guidance
    run = load_run_or_warn(source, device=device, overrides=overrides)
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
