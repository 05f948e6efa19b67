"""``console``: one line of scalars per logged step on standard error."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO


class ConsoleLogger:
    """Writes ``step N: key=value ...`` lines (the values to ``digits`` significant digits)."""

    def __init__(self, stream: TextIO, digits: int) -> None:
        self.stream, self.digits = stream, digits

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        parts = [f"{k}={v:.{self.digits}g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items()]
        print(f"step {step}: " + " ".join(parts), file=self.stream, flush=True)

    def log_image(self, step: int, name: str, image) -> None:
        shape = "x".join(str(s) for s in image.shape)
        print(f"step {step}: image {name} ({shape})", file=self.stream, flush=True)

    def log_text(self, step: int, name: str, text: str) -> None:
        """Text (the resolved recipe) is not repeated on the console."""

    def close(self) -> None:
        self.stream.flush()


def console(run_dir: Path, *, digits: int = 4) -> ConsoleLogger:
    """Metric lines on standard error (useful where no progress bar is drawn: logs, batch jobs).

    Args:
        digits: significant digits of each value.
    """
    if digits < 1:
        raise ValueError(f"digits must be at least 1, got {digits}")
    return ConsoleLogger(sys.stderr, digits)
