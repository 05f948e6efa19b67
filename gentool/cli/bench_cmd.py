"""``gentool bench``: training and sampling throughput of a recipe on this device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from gentool.cli.app import app, console, err, friendly
from gentool.cli.output import THREADS_HELP, threads_override

SET_HELP = "Override a recipe value, e.g. --set denoiser.channels=64 (TOML value syntax)."


@app.command()
@friendly
def bench(
    recipe: Path = typer.Argument(..., help="Recipe TOML file (its data set is not needed)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object to stdout instead of a table."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Timed training steps (default: 3 on CPU, 50 on CUDA)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Training batch (default: the recipe's train.batch_size)."),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile",
                                            help="torch.compile (default: the recipe's run.compile; auto = CUDA only)."),
    compile_mode: Optional[str] = typer.Option(None, "--compile-mode",
                                               help="torch.compile mode for training (default: the recipe's "
                                                    "run.compile_mode), e.g. max-autotune-no-cudagraphs."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed warm-up steps (default: 1 on CPU, 10 on CUDA)."),
    sample_batch: Optional[int] = typer.Option(None, "--sample-batch",
                                               help="Images per sampling call (default: --batch on CPU, 256 on CUDA)."),
    sample_steps: Optional[int] = typer.Option(None, "--sample-steps", help="Timed sampling calls (default: --steps)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="Channels-last weights and inputs (default: on CUDA only)."),
    peak_tflops: Optional[float] = typer.Option(None, "--peak-tflops",
                                                help="bf16 peak TFLOP/s for the utilisation fraction (default: data-sheet value)."),
    compare: Optional[str] = typer.Option(None, "--compare", help="Also time another system in this process: diffusers."),
    device: Optional[str] = typer.Option(None, help="Override the recipe's run.device (cpu, cuda, cuda:N)."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
) -> None:
    """Time training steps and sampling denoiser calls after warm-up; print images/s, evaluations/s,
    peak memory, parameters, FLOPs and, on CUDA, the fraction of the bf16 peak."""
    from gentool.paths import require_recipe

    require_recipe(recipe)  # before torch's import
    overrides = [*set_, *threads_override(threads)]
    from gentool.bench import BenchSettings, bench_recipe

    settings = BenchSettings(batch=batch, steps=steps, warmup=warmup, compile=compile_, compile_mode=compile_mode,
                             channels_last=channels_last,
                             sample_batch=sample_batch, sample_steps=sample_steps, peak_tflops=peak_tflops)
    with err.status("benchmarking") as status:
        result = bench_recipe(recipe, overrides=overrides, device=device, settings=settings, compare=compare,
                              log=lambda m: status.update(m))
    if json_:
        print(json.dumps(result, indent=2, default=str))
        return
    console.print(result_table(result))


def _row(table: Table, key: str, value, fmt: str = "{:,.1f}") -> None:
    if value is not None:
        table.add_row(key, fmt.format(value) if not isinstance(value, str) else value)


def result_table(r: dict) -> Table:
    theirs = r.get("compare", {}).get("diffusers")
    table = Table(title=f"{r['recipe']} on {r['device']}, torch {r['torch']}", title_justify="left")
    table.add_column("")
    table.add_column("gentool", justify="right")
    if theirs:
        table.add_column("diffusers", justify="right")
        table.add_column("ratio", justify="right")
    rows = [("parameters", "params", "{:,}"), ("GFLOPs / image, forward", "flops_per_img", "{:.3e}"),
            ("training images/s", "train_img_per_s", "{:,.1f}"), ("training step (ms)", "train_step_ms", "{:,.1f}"),
            ("training TFLOP/s", "train_tflops", "{:.3f}"), ("training bf16 peak fraction", "train_peak_fraction", "{:.1%}"),
            ("training peak memory (MiB)", "train_peak_mem_mb", "{:,.0f}"),
            ("sampling evaluations/s", "sample_evals_per_s", "{:,.1f}"),
            ("sampling images/s (full sampler)", "sample_img_per_s", "{:,.3f}"),
            ("sampling bf16 peak fraction", "sample_peak_fraction", "{:.1%}"),
            ("sampling peak memory (MiB)", "sample_peak_mem_mb", "{:,.0f}")]
    for label, key, fmt in rows:
        if r.get(key) is None:
            continue
        value = r[key] / 1e9 if key == "flops_per_img" else r[key]
        fmt = "{:.2f}" if key == "flops_per_img" else fmt
        cells = [label, fmt.format(value)]
        if theirs:
            other = theirs.get(key)
            other = other / 1e9 if key == "flops_per_img" and other is not None else other
            cells.append(fmt.format(other) if other is not None else "")
            cells.append(f"{value / other:.2f}x" if other else "")
        table.add_row(*cells)
    table.caption = (f"batch {r['batch']}, {r['steps']} timed steps after {r['warmup']} warm-up, "
                     f"sample batch {r['sample_batch']}, compile {r['compile']}, channels-last {r['channels_last']}, "
                     f"bf16 {r['bf16']}; memory: {r['memory_measure']}")
    if theirs and not r["compare"].get("same_network", True):
        table.caption += ("; [bold yellow]the two networks differ (see GFLOPs / image): the ratios compare "
                          "different work[/]")
    return table
