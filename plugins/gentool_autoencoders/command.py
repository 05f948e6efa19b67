"""``gentool autoencoder train|test RECIPE``: train the recipe's ``kl`` autoencoder, or measure any autoencoder."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer


class Action(str, Enum):
    train = "train"
    test = "test"


def autoencoder(
    action: Action = typer.Argument(..., help="train: train the recipe's kl autoencoder on its [data] (resuming); "
                                    "test: the reconstruction error of its [autoencoder] on the test split."),
    recipe: Path = typer.Argument(..., help="A recipe with an [autoencoder] table and a [data] table."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe value, e.g. --set autoencoder.steps=100."),
    device: Optional[str] = typer.Option(None, "--device", help="Device to use (default: the recipe's [run] device)."),
    images: int = typer.Option(0, "--images", help="Test images to reconstruct (0: all); train measures them too."),
) -> None:
    """Train the recipe's kl autoencoder into its path, or measure its reconstruction error.

    train writes path/autoencoder.safetensors (and checkpoints, metrics.jsonl),
    then measures it like test; test writes reconstruction.json and
    reconstruction.png (into the kl autoencoder's path, else the run directory).
    Train it before `gentool run RECIPE`, which encodes the data with it.
    """
    from gentool import load_recipe, stderr

    from gentool_autoencoders.train import test_autoencoder, train_autoencoder

    rec = load_recipe(recipe, overrides=list(set_))
    say = lambda message: stderr.print(message, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    if action is Action.train:
        train_autoencoder(rec, device=device, log=say, test_images=images)
    else:
        test_autoencoder(rec, device=device, images=images, log=say)
