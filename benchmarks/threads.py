"""Time 20 Fashion-MNIST training steps and a short ``gentool sample`` per thread count, idle and busy.

    python benchmarks/threads.py                  # candidates for this machine, idle then busy
    python benchmarks/threads.py --threads 1 2 --steps 20 --sample-steps 50

"busy" starts two processes that each spin a core (``while 1: pass``) for the
duration, like other programs sharing the machine. Each measurement is a fresh
``gentool`` process with ``--threads N`` (``OMP_NUM_THREADS`` unset), in a
scratch run directory; the figures are wall-clock seconds of the whole command
(start-up included) and, for training, the steps/s of its last log line.
Results go to stdout as one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fashion_mnist.toml"


def candidates() -> dict[str, int]:
    import torch

    from gentool.threads import available_cores, default_threads

    cores = available_cores()
    return {"torch default": torch.get_num_threads(), "physical cores": os.cpu_count() or 1,
            "cores - 1": max(1, cores - 1), "one per two cores": default_threads(cores)}


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return time.perf_counter() - start, out.stdout + out.stderr


def measure(threads: int, steps: int, sample_steps: int, scratch: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["GENTOOL_NO_PROGRESS"] = "1"
    gentool = [sys.executable, "-m", "gentool"]
    name = f"threads_{threads}_{time.time_ns()}"
    train_s, log = timed(gentool + ["run", str(RECIPE), "--threads", str(threads), "--no-tasks",
                                    "--set", f"run.name={name}", "--set", f"run.output_dir={scratch.as_posix()}",
                                    "--set", f"train.steps={steps}", "--set", f"train.log_every={steps}",
                                    "--set", "train.sample_every=0", "--set", f"train.checkpoint_every={steps}"], env)
    rate = re.findall(r"([\d.]+) steps/s", log)
    sample_s, _ = timed(gentool + ["sample", str(scratch / name), "--threads", str(threads), "--steps",
                                   str(sample_steps), "--n", "16", "--out", str(scratch / f"{name}_samples")], env)
    return {"threads": threads, "train_s": round(train_s, 1), "steps_per_s": float(rate[-1]) if rate else None,
            "sample_s": round(sample_s, 1), "load": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="*", help="thread counts (default: this machine's candidates)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--modes", nargs="*", default=["idle", "busy"], choices=["idle", "busy"])
    args = parser.parse_args()
    cands = candidates()
    print(json.dumps({"candidates": cands, "cores": os.cpu_count()}), flush=True)
    counts = args.threads or sorted(set(cands.values()))
    with tempfile.TemporaryDirectory() as scratch:
        for mode in args.modes:
            spinners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)] \
                if mode == "busy" else []
            try:
                for n in counts:
                    print(json.dumps({"mode": mode, **measure(n, args.steps, args.sample_steps, Path(scratch))}),
                          flush=True)
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()


if __name__ == "__main__":
    main()
