"""``gentool eval`` and evaluation during training: samples -> features -> metrics -> report."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from gentool.config import EvalConfig
from gentool.errors import UsageError
from gentool.evaluation.classes import LOGITS, check_classifier, class_accuracy, real_features
from gentool.evaluation.features import build_extractor, concat, extract, feature_layer, to_rgb_uint8
from gentool.evaluation.fidelity import REFERENCE_METRICS, SAMPLE_METRICS, sample_metrics
from gentool.evaluation.likelihood import bpd_metric, loss_t_metric
from gentool.evaluation.reference import reference_features

RANDOM_FEATURES = ("the feature extractor has random weights: its FID/KID/IS/precision/recall compare only with "
                   "numbers from the same extractor and seed, never with published figures or a trained "
                   "extractor's (train one: gentool features train)")
MIN_SAMPLES = 10  # IS splits, KID subsets and k-NN precision/recall need a few images
CLASS_METRICS = ("class_acc",)  # from the samples' logits and requested labels (gentool.evaluation.classes)


def progress_bar(enabled: bool = True):
    """gentool's progress bar; a disabled one never takes the terminal (e.g. inside training's)."""
    from gentool.progress import make_progress

    bar = make_progress(transient=True)
    bar.disable = bar.disable or not enabled
    return bar


def class_cycle(run, start: int, n: int) -> torch.Tensor | None:
    """Labels ``start .. start + n - 1`` modulo the number of classes (every class in turn); None if unconditional."""
    return torch.arange(start, start + n) % run.num_classes if run.num_classes else None


def sampler_settings(run, config: EvalConfig, guidance: float | None) -> dict[str, Any]:
    spec = run.recipe.sampler
    name = config.sampler or spec.name
    options = dict(run.sampler(name).keywords)  # resolved options; an unknown name fails before any work
    steps = config.steps or spec.steps
    _, w = run.sampling_inputs(class_cycle(run, 0, 1), guidance)  # the labels generate_features uses
    return {"name": name, "steps": steps or run.diffusion.num_timesteps, "guidance": w, "options": options, "_steps": steps}


def generate_features(run, fx, *, n: int, batch_size: int, sampler: dict, seed: int,
                      save_samples: str | Path | None, bar) -> dict[str, torch.Tensor]:
    """Sample ``n`` images in batches and return their features; PNG files only if ``save_samples``."""
    generator = run.generator(seed)
    steps_per_batch = len(run.diffusion.timesteps(sampler["_steps"]))
    task = bar.add_task(f"sampling {n} images", total=n)
    folder = Path(save_samples) if save_samples else None
    parts = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        labels = class_cycle(run, start, b)

        def step(info, b=b):
            bar.advance(task, b / steps_per_batch)

        x = run.sample(b, labels=labels, guidance=sampler["guidance"], steps=sampler["_steps"], sampler=sampler["name"],
                       generator=generator, callback=step, progress=False)
        images = to_rgb_uint8(x)
        parts.append(extract(fx, images))
        if folder is not None:
            save_pngs(x, folder, start)
        bar.update(task, completed=start + b)
    return concat(parts)


def save_pngs(x: torch.Tensor, folder: Path, start: int) -> None:
    from gentool.images import save_png, to_unit

    for i, image in enumerate(to_unit(x)):
        save_png(image, folder / f"{start + i:06d}.png")


def evaluate(run, config: EvalConfig | None = None, *, n: int | None = None,
             guidance: float | Sequence[float] | None = None, seed: int | None = None,
             cache_dir: str | Path | None = None, save_samples: str | Path | None = None,
             progress: bool = True, floor: bool = False, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Compute ``config.metrics`` for a built run (EMA weights) and return the report.

    ``n`` (default ``config.n``) images are sampled with the recipe's sampler
    (or ``config.sampler``/``config.steps``) from a fixed ``seed`` (default the
    recipe's) and compared with the data split ``config.split`` through the
    feature extractor; the reference features come from the cache when they
    can. The feature extractor and its weights are checked before sampling.
    Class-conditional samples ask for the classes in turn (sample i: class
    i mod C). Several ``guidance`` weights give one set of sample metrics each,
    under ``report["by_guidance"]["<w>"]``; ``floor`` adds the same metrics for
    ``n`` real test images against the train split (``report["floor"]``).
    ``warn`` receives, before any work, what makes the numbers doubtful (an
    extractor with random weights); the report lists it under ``warnings``.
    """
    config = config or run.recipe.eval or EvalConfig()
    n = config.n if n is None else int(n)
    seed = run.recipe.run.seed if seed is None else seed
    metrics = list(dict.fromkeys(config.metrics))
    if "bpd" in metrics and not (getattr(run.process, "discrete", False) and hasattr(run.process, "posterior_variance")):
        raise UsageError(f"bpd (bits/dim, Ho et al. eq. 5) is the discrete DDPM chain's variational bound, and "
                         f"process {run.recipe.process.name!r} is not that chain; leave bpd out of --metrics")
    wanted = [m for m in metrics if m in SAMPLE_METRICS or m in CLASS_METRICS]
    weights = list(guidance) if isinstance(guidance, (list, tuple)) else [guidance]
    if wanted and n < MIN_SAMPLES:
        raise UsageError(f"n (--n, or [eval] n) must be at least {MIN_SAMPLES} for {', '.join(wanted)}, got {n}")
    t_start = time.perf_counter()
    report: dict[str, Any] = {"metrics": {}, "n": n if wanted else 0, "step": run.step,
                              "checkpoint": str(run.checkpoint) if run.checkpoint else None,
                              "run_dir": str(run.run_dir), "seed": seed, "device": str(run.device), "time_s": {}}
    values, times = report["metrics"], report["time_s"]
    fx = checked_extractor(run, config, wanted, report, warn) if wanted else None  # before any work
    with progress_bar(progress) as bar:
        if wanted and len(weights) == 1:
            sampler = sampler_settings(run, config, weights[0])
            values.update(_sample_metrics(run, config, fx, wanted, n, sampler, seed, cache_dir, save_samples, bar,
                                          report))
        elif wanted:
            report["by_guidance"] = {}
            for w in weights:
                sampler = sampler_settings(run, config, w)
                folder = Path(save_samples) / f"w{w:g}" if save_samples else None
                report["by_guidance"][f"{w:g}"] = _sample_metrics(run, config, fx, wanted, n, sampler, seed,
                                                                  cache_dir, folder, bar, report)
                times[f"sampling_w{w:g}"] = times.pop("sampling")
        if wanted and floor:
            t0 = time.perf_counter()
            report["floor"] = real_floor(run, config, fx, wanted, n, cache_dir, bar)
            times["floor"] = time.perf_counter() - t0
        if "loss_t" in metrics:
            t0 = time.perf_counter()
            values.update(loss_t_metric(run, batch_size=config.batch_size, max_batches=config.data_batches))
            times["loss_t"] = time.perf_counter() - t0
        if "bpd" in metrics:
            t0 = time.perf_counter()
            bpd, count = bpd_metric(run, batch_size=config.batch_size, max_batches=config.data_batches,
                                    timesteps=config.bpd_timesteps, seed=seed, bar=bar)
            values.update(bpd)
            times["bpd"] = time.perf_counter() - t0
            report["bpd"] = {"images": count, "timesteps": config.bpd_timesteps or "all"}
    times["total"] = time.perf_counter() - t_start
    report["time_s"] = {k: round(v, 3) for k, v in times.items()}
    report["versions"] = versions()
    report["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return report


def checked_extractor(run, config: EvalConfig, wanted: list[str], report: dict[str, Any],
                      warn: Callable[[str], None] | None = None):
    """The feature extractor, checked against ``wanted``; one with random weights is reported at once to
    ``warn`` (with how to train it) and in ``report["warnings"]``, not after minutes of reference features."""
    fx = extractor(run, config, wanted)
    report["feature_extractor"] = {"name": config.feature_extractor, "weights": weights_used(fx, config) or None}
    if getattr(fx, "trained", True) is False:  # an extractor that says its weights are random (gentool-cnn28's seed)
        report["feature_extractor"]["random_weights"] = True
        report.setdefault("warnings", []).append(RANDOM_FEATURES)
        if warn is not None:
            hint = getattr(fx, "untrained_hint", "")
            warn(f"{hint}: {RANDOM_FEATURES}" if hint else RANDOM_FEATURES)
    return fx


def _sample_metrics(run, config: EvalConfig, fx, wanted: list[str], n: int, sampler: dict, seed: int,
                    cache_dir, save_samples, bar, report: dict[str, Any]) -> dict[str, float]:
    """Reference features (cached), samples' features, then the metrics."""
    times = report["time_s"]
    reference = None
    if any(m in REFERENCE_METRICS for m in wanted):
        t0 = time.perf_counter()
        reference, info = reference_features(run, fx, split=config.split, reference_n=config.reference_n,
                                             weights=weights_used(fx, config), batch_size=config.batch_size,
                                             cache_dir=cache_dir, bar=bar)
        times["reference"] = time.perf_counter() - t0
        report["reference"] = {"split": config.split, **info}
    t0 = time.perf_counter()
    feats = generate_features(run, fx, n=n, batch_size=config.batch_size, sampler=sampler, seed=seed,
                              save_samples=save_samples, bar=bar)
    times["sampling"] = time.perf_counter() - t0
    report["sampler"] = {k: v for k, v in sampler.items() if not k.startswith("_")}
    if save_samples:
        report["samples_dir"] = str(save_samples)
    labels = class_cycle(run, 0, n)  # the classes generate_features asked for
    return scores(wanted, fx, feats, reference, labels)


def extractor(run, config: EvalConfig, wanted: list[str]):
    """The feature extractor with every metric's features (so the reference cache key does not depend on
    the metrics asked for), checked against ``wanted`` before any sampling."""
    data = run.recipe.data.name if run.recipe.data is not None else ""
    fx = build_extractor(run.registry, config.feature_extractor, config.feature_weights, data=data).to(run.device)
    for metric in wanted:
        if metric in CLASS_METRICS:
            check_classifier(fx, run.num_classes)
        else:
            feature_layer(fx, metric)  # a missing feature fails now, not after sampling
    return fx


def weights_used(fx, config: EvalConfig) -> str:
    """The weights file behind ``fx``: ``--feature-weights``, else one the extractor found itself (or "")."""
    return config.feature_weights or getattr(fx, "weights_path", "") or ""


def scores(wanted: list[str], fx, feats: dict[str, torch.Tensor], reference, labels) -> dict[str, float]:
    """The ``wanted`` metrics of one image set's features (``labels``: the classes asked for, or the true ones)."""
    out = sample_metrics([m for m in wanted if m in SAMPLE_METRICS], fx, feats, reference)
    if "class_acc" in wanted:
        out["class_acc"] = class_accuracy(feats[LOGITS], labels)
    return out


def real_floor(run, config: EvalConfig, fx, wanted: list[str], n: int, cache_dir, bar) -> dict[str, Any]:
    """The ``wanted`` metrics of ``n`` real test images (true labels) against the train split: "perfect" at n."""
    feats, labels = real_features(run, fx, n=n, batch_size=config.batch_size, split="test")
    reference = None
    if any(m in REFERENCE_METRICS for m in wanted):
        reference, _ = reference_features(run, fx, split="train", reference_n=config.reference_n,
                                          weights=weights_used(fx, config), batch_size=config.batch_size,
                                          cache_dir=cache_dir, bar=bar)
    return {"images": f"{len(labels)} test-split images vs the train split", **scores(wanted, fx, feats, reference, labels)}


def versions() -> dict[str, str]:
    import torch_fidelity

    import gentool

    return {"gentool": gentool.__version__, "torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__}


def evaluate_in_training(run, step: int) -> dict[str, float]:
    """The recipe's ``[eval]`` metrics on ``[eval] n`` samples of the EMA model, for the train loop.

    Draws no numbers from the global random state (the training stays
    reproducible) and leaves the model in the mode it found it in.
    """
    config = run.recipe.eval or EvalConfig()
    was_training = run.model.training
    devices = [run.device] if run.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            report = evaluate(run, config, progress=False)
    finally:
        run.model.train(was_training)
    return dict(report["metrics"])


def default_report_path(run) -> Path:
    return run.run_dir / "eval" / f"step_{run.step:08d}.json"


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Save the report as indented JSON, atomically (folders created)."""
    from gentool.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(report, indent=2, sort_keys=False) + "\n")


def parse_metrics(text: str) -> list[str]:
    """``"fid,isc"`` -> ``["fid", "isc"]``; an unknown name fails with the closest valid ones."""
    import typing

    from gentool.config import EvalMetric
    from gentool.registry import closest

    valid = list(typing.get_args(EvalMetric))
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise UsageError(f"--metrics names no metric; valid: {', '.join(valid)}")
    for name in names:
        if name not in valid:
            near = closest(name, valid)
            hint = f"did you mean {' or '.join(map(repr, near))}? " if near else ""
            raise UsageError(f"unknown metric {name!r}; {hint}valid: {', '.join(valid)}")
    return names


def parse_guidance(text: str | None) -> float | list[float] | None:
    """``"2"`` -> 2.0; ``"0,1,2"`` -> ``[0.0, 1.0, 2.0]``; None -> None (the recipe's)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--guidance must be a number or comma-separated numbers (0,1,2), got {text!r}") from None
    if not values:
        raise UsageError(f"--guidance must be a number or comma-separated numbers (0,1,2), got {text!r}")
    return values[0] if len(values) == 1 else values


def eval_config(run, **overrides: Any) -> EvalConfig:
    """The recipe's ``[eval]`` table (or the defaults) with every non-None override applied."""
    import dataclasses

    base = run.recipe.eval or EvalConfig()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(changes.get("metrics"), str):
        changes["metrics"] = parse_metrics(changes["metrics"])
    if "split" in changes and changes["split"] not in ("train", "test"):
        raise UsageError(f"--split must be train or test, got {changes['split']!r}")
    return dataclasses.replace(base, **changes)
