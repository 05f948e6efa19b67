"""A logger: every scalar as a row ``step,name,value`` of ``RUN_DIR/metrics.csv``."""

import csv
from pathlib import Path


class CsvLogger:
    def __init__(self, path: Path) -> None:
        new = not path.exists()
        self.file = path.open("a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(["step", "name", "value"])

    def log_scalars(self, step, scalars):
        for name, value in scalars.items():
            self.writer.writerow([step, name, value])
        self.file.flush()

    def log_image(self, step, name, image):
        pass  # a CSV holds no images

    def log_text(self, step, name, text):
        pass

    def close(self):
        self.file.close()


def csv_logger(run_dir: Path, *, filename: str = "metrics.csv") -> CsvLogger:
    """Scalars as ``step,name,value`` rows of a CSV file in the run directory.

    Args:
        filename: the file's name in the run directory.
    """
    return CsvLogger(Path(run_dir) / filename)
