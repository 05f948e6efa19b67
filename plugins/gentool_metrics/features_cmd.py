"""``gentool features train DATA``: train ``gentool-cnn28`` as a classifier of a data set and save it.

Registered through the command hook; cheap to import (torch is imported inside).
The weights go to ``~/.cache/gentool/features/gentool-cnn28-DATA.safetensors``
(``$GENTOOL_CACHE_DIR`` or ``$XDG_CACHE_HOME/gentool`` first), where
``gentool eval --feature-extractor gentool-cnn28`` finds them for runs on DATA.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

ACTIONS = ("train",)


def train_features(data: str = "fashion_mnist", *, root: str = "data", steps: int = 4000, batch_size: int = 128,
                   lr: float = 2e-3, flip: bool | None = None, seed: int = 0, out: str | Path | None = None,
                   device: str = "cpu", log=print) -> dict:
    """Train ``gentool-cnn28`` on DATA's train split, report its test accuracy, save it; the result dict.

    ``flip`` None: mirror the training images at random when the data set says
    mirror images keep their class (its ``mirror_invariant``).
    """
    import gentool
    from gentool import resolve_device
    from gentool import GentoolError, UsageError

    from gentool_metrics.cnn28 import default_weights_path, train_classifier

    for option, value in (("--steps", steps), ("--batch-size", batch_size)):
        if value < 1:  # no training step: the saved classifier would be its random initial weights
            raise UsageError(f"{option} {value}: must be at least 1 (the classifier would be saved untrained)")
    if not math.isfinite(lr) or lr <= 0:
        raise UsageError(f"--lr {lr}: must be a finite number above 0, e.g. 2e-3")
    try:
        device = str(resolve_device(device))
    except UsageError as exc:
        raise UsageError(f"--device: {exc}") from None

    reg = gentool.registry()
    if ("data_source", data) not in reg:
        known = ", ".join(sorted(reg.names("data_source")))
        raise GentoolError(f"unknown data source {data!r} for `gentool features train`; known: {known}")
    factory = reg.get("data_source", data).factory
    options = {"root": root} if "root" in _parameters(factory) else {}
    train_split, test_split = factory("train", **options), factory("test", **options)
    classes = getattr(train_split, "classes", None) or sorted({int(train_split[i][1]) for i in range(len(train_split))})
    path = Path(out) if out else default_weights_path(data)
    if flip is None:  # mirror only data whose mirror images keep their class (garments yes, digits no)
        flip = bool(getattr(train_split, "mirror_invariant", False))
    log(f"training gentool-cnn28 on {data} ({len(train_split):,} images, {len(classes)} classes), {steps} steps"
        f"{', mirrored at random' if flip else ''}")
    return train_classifier(train_split, path, test=test_split, num_classes=len(classes), steps=steps,
                            batch_size=batch_size, lr=lr, flip=flip, seed=seed, data=data, device=device, log=log)


def _parameters(factory) -> set[str]:
    import inspect

    return set(inspect.signature(factory).parameters)


def features(
    action: str = typer.Argument(..., help="What to do: train (the gentool-cnn28 classifier of DATA)."),
    data: str = typer.Argument("fashion_mnist", help="Registered data source (fashion_mnist, mnist, ...)."),
    root: str = typer.Option("data", "--root", help="The data source's root folder."),
    steps: int = typer.Option(4000, "--steps", help="Optimiser steps (4000 of batch 128: about 8.5 epochs)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per step."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak AdamW learning rate of the one-cycle schedule."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Mirror half of each batch left-right "
                                        "[default: if DATA says its mirror images keep their class, e.g. "
                                        "fashion_mnist, cifar10; not mnist]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and the batches."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=escape("Weights file [default: where gentool eval looks: ~/.cache/gentool/features/gentool-cnn28-DATA.safetensors]")),
    device: str = typer.Option("cpu", "--device", help="Device to train on, e.g. cpu or cuda."),
) -> None:
    """Train the gentool-cnn28 feature extractor as a classifier of DATA and save it where gentool eval finds it."""
    from gentool import GentoolError

    if action not in ACTIONS:
        raise GentoolError(f"gentool features: unknown action {action!r}; valid: {', '.join(ACTIONS)}")
    result = train_features(data, root=root, steps=steps, batch_size=batch_size, lr=lr, flip=flip, seed=seed,
                            out=out, device=device, log=lambda line: typer.echo(line, err=True))
    typer.echo(f"test accuracy {result['test_accuracy']:.2%} (train {result['train_accuracy']:.2%})")
    typer.echo(f"wrote {result['path']}")
