"""A task's earlier outputs, kept by step when a run has trained on: ``RUN_DIR/<task>/step_<N>/``.

``gentool run`` (and ``gentool sweep``) write each recipe task's files into
``RUN_DIR/<task>/`` and note there, in ``.step``, the training step of the
weights they came from. Run again after training on (``--set
train.steps=2400``), they first move what that folder holds (all but the
``step_<N>/`` folders of earlier steps) into ``RUN_DIR/<task>/step_<N>/``, N
the noted step, so the grid of every step stays; at the same step they write
over it. Outputs of a gentool that noted no step are taken to be of the step
training resumed from, when this call trained (``made_at``); otherwise they
are written over as before.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

STEP_FILE = ".step"
KEPT = re.compile(r"step_\d{8}(\.\d+)?")  # the folders of earlier steps' outputs


def noted_step(folder: Path) -> int | None:
    """The step noted in ``folder/.step`` (None: no note, or not a number)."""
    try:
        return int((Path(folder) / STEP_FILE).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def note_step(folder: Path, step: int) -> None:
    """Note in ``folder`` the step of the weights its outputs came from."""
    from gentool.atomic import atomic_write_text

    atomic_write_text(Path(folder) / STEP_FILE, f"{step}\n")


def keep_earlier(folder: Path, step: int, made_at: int | None = None) -> Path | None:
    """Move ``folder``'s outputs of a step other than ``step`` into ``folder/step_<N>/``; returns that folder.

    Args:
        folder: a task's output folder, ``RUN_DIR/<task>``.
        step: the step of the weights the task is about to use.
        made_at: the step of outputs without a note (``None``: such outputs are written over).

    Returns:
        The folder the earlier outputs were moved into, or ``None`` when nothing was moved.
    """
    folder = Path(folder)
    made = noted_step(folder)
    made = made_at if made is None else made
    if made is None or made == step or not folder.is_dir():
        return None
    entries = [p for p in folder.iterdir() if not (p.is_dir() and KEPT.fullmatch(p.name))]
    if not [p for p in entries if p.name != STEP_FILE]:
        return None
    dest, n = folder / f"step_{made:08d}", 0
    while dest.exists():  # kept before under the same step: never mix two sets
        n += 1
        dest = folder / f"step_{made:08d}.{n}"
    dest.mkdir()
    for entry in entries:
        os.replace(entry, dest / entry.name)
    return dest
