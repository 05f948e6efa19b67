"""``jsonl``: one JSON object per line in ``RUN_DIR/metrics.jsonl`` (read by the plots and ``gentool compare``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

METRICS = "metrics.jsonl"


class JsonlLogger:
    """Appends ``{"step": step, **scalars}`` lines; NaN and infinities are written as null (strict JSON).

    On a resumed run the engine has already dropped the lines after the resumed step.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        record = {"step": step, **scalars}
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def log_image(self, step: int, name: str, image) -> None:
        """Images are not written here (the engine saves sample grids in ``samples/``)."""

    def log_text(self, step: int, name: str, text: str) -> None:
        """Text is not written here (the engine saves the recipe as ``recipe.resolved.toml``)."""

    def close(self) -> None:
        self._file.close()


def jsonl(run_dir: Path, *, filename: str = METRICS) -> JsonlLogger:
    """Scalars as JSON lines in the run directory, one object per logged step.

    Args:
        filename: the file in the run directory (``metrics.jsonl`` is what the plots read).
    """
    return JsonlLogger(Path(run_dir) / filename)
