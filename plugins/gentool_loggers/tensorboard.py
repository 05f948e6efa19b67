"""``tensorboard``: scalars, sample grids and the resolved recipe as TensorBoard events in ``RUN_DIR/tensorboard``.

Needs the ``tensorboard`` package (``pip install 'gentool[tensorboard]'``);
the writer is ``torch.utils.tensorboard.SummaryWriter``. View with
``tensorboard --logdir runs`` (every run under ``runs/`` side by side).
"""

from __future__ import annotations

import math
from pathlib import Path

from gentool import GentoolError

INSTALL = "pip install 'gentool[tensorboard]' (or pip install tensorboard)"


class TensorBoardMissing(GentoolError, ImportError):
    """[run] loggers names tensorboard but the package is not installed."""


class TensorBoardLogger:
    """A ``SummaryWriter``: ``add_scalar`` per finite scalar, ``add_image`` per grid, ``add_text`` per text."""

    def __init__(self, writer) -> None:
        self.writer = writer

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, float(value), step)

    def log_image(self, step: int, name: str, image) -> None:
        """``image``: ``[C, H, W]`` floats in [0, 1] (a sample grid)."""
        self.writer.add_image(name, image.detach().float().clamp(0, 1).cpu(), step, dataformats="CHW")

    def log_text(self, step: int, name: str, text: str) -> None:
        # TensorBoard renders Markdown: indent four spaces so a TOML recipe shows as a code block
        self.writer.add_text(name, "\n".join("    " + line for line in text.splitlines()), step)

    def close(self) -> None:
        self.writer.close()


def tensorboard(run_dir: Path, *, subdir: str = "tensorboard", flush_secs: int = 30) -> TensorBoardLogger:
    """TensorBoard event files: the training scalars (loss, learning rate, gradient norm), the test
    losses and evaluation metrics, the sample grids and the resolved recipe.

    Args:
        subdir: folder in the run directory for the event files (``tensorboard --logdir RUN_DIR/subdir``,
            or ``--logdir runs`` for every run).
        flush_secs: seconds between writes of the pending events to disk.
    """
    if not subdir or Path(subdir).is_absolute() or ".." in Path(subdir).parts:
        raise ValueError(f"subdir must be a folder name inside the run directory, got {subdir!r}")
    if flush_secs < 1:
        raise ValueError(f"flush_secs must be at least 1, got {flush_secs}")
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
    except ImportError:
        raise TensorBoardMissing(f"[run] loggers: 'tensorboard' needs the tensorboard package; install it with "
                                 f"{INSTALL}") from None
    return TensorBoardLogger(SummaryWriter(log_dir=str(Path(run_dir) / subdir), flush_secs=flush_secs))
