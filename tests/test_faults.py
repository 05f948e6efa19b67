"""Faults of the machine and of other processes: one-line errors, no partial files, no result lost.

Injected faults: a full disk (the temporary file of every atomic write opened
on ``/dev/full``, so the kernel itself answers ENOSPC), a read-only file system
(EROFS from ``os.open``/``os.mkdir`` under the run directory), a path under a
regular file (real), two ``gentool run`` on one run directory (real
processes), SIGKILL in the middle of a checkpoint write (real). Each asserts
the one-line message, the exit code and that every earlier checkpoint still
loads.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import gentool.atomic
from gentool.cli import app
from gentool.engine import checkpoint as ckpt
from gentool.engine.lock import LOCK_FILE, RunLock
from gentool.evaluation import reference

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result) -> str:
    """The single ``error: ...`` line of a failed command (no traceback), whitespace joined."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    text = " ".join(result.output.split())
    assert text.count("error:") == 1, result.output
    return text[text.index("error:"):]


def all_checkpoints_load(run_dir: Path) -> list[int]:
    """Every checkpoint file loads (checksum verified); no temporary file is left. Returns their steps."""
    folder = run_dir / ckpt.CHECKPOINT_DIR
    assert not list(folder.glob(".*.tmp")), list(folder.iterdir())
    steps = []
    for path in ckpt.list_checkpoints(run_dir):
        steps.append(int(ckpt.load_checkpoint(path)["step"]))
    return steps


def lock_is_free(run_dir: Path) -> bool:
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except Exception:  # noqa: BLE001 - RunLockedError
        return False
    lock.release()
    return True


@pytest.fixture
def run_dir(trained_toy_copy, tmp_path) -> Path:
    """A copy of the shared toy run trained to step 2 (checkpoint 2); its recipe is ``tmp_path/toy.toml``."""
    return tmp_path / "runs" / "toy"


@pytest.fixture
def disk_full(monkeypatch):
    """Every atomic write's temporary file is opened on /dev/full: the kernel answers ENOSPC on the first flush."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    real = gentool.atomic.tempfile.mkstemp

    def full(*args, **kwargs):
        fd, name = real(*args, **kwargs)  # the real temporary file exists: its clean-up is part of the test
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(gentool.atomic.tempfile, "mkstemp", full)


def read_only(monkeypatch, root: Path) -> None:
    """Creating anything under ``root`` fails with EROFS, as on a read-only mount (root ignores chmod)."""
    real_open, real_mkdir = os.open, os.mkdir
    root = str(root.resolve())

    def under(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(root)

    def ro_open(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):
        if under(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)


# -- a full disk ----------------------------------------------------------------------------

def test_disk_full_while_saving_a_checkpoint(run_dir, tmp_path, disk_full):
    result = invoke("run", tmp_path / "toy.toml", "--set", "train.steps=4", "--no-tasks")
    line = one_error_line(result)
    assert "disk full" in line and "recipe.resolved.toml" in line or "step_00000004.pt" in line, line
    assert all_checkpoints_load(run_dir) == [2]
    assert lock_is_free(run_dir)


def test_disk_full_leaves_no_partial_png(run_dir, tmp_path, disk_full):
    out = tmp_path / "out"
    line = one_error_line(invoke("sample", run_dir, "--n", 2, "--steps", 2, "--out", out))
    assert line.startswith(f"error: {out / 'grid.png'}: disk full"), line
    assert not (out / "grid.png").exists() and not list(out.glob(".*"))  # no 0-byte grid, no temporary file


def test_atomic_write_reports_enospc_from_torch_save(tmp_path, disk_full):
    """torch.save turns the failed write into a RuntimeError ('inline_container.cc'); the OSError is kept."""
    with pytest.raises(OSError) as caught:
        gentool.atomic.atomic_save({"w": torch.zeros(100_000)}, tmp_path / "x.pt")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []



def test_disk_full_while_inverting_leaves_no_latents_file(run_dir, tmp_path, disk_full):
    out = tmp_path / "inv"
    line = one_error_line(invoke("invert", run_dir, "--indices", "0,1", "--steps", 2, "--out", out))
    assert line.startswith(f"error: {out / 'latents.pt'}: disk full"), line
    assert not (out / "latents.pt").exists() and not list(out.glob(".*"))  # no 0-byte latents, no temporary file


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle"])
def test_a_damaged_latents_file_is_one_line(run_dir, tmp_path, damage):
    """``interpolate --latents``: a cut, foreign or planted file is refused in one line; a pickle never runs."""
    from test_security import malicious

    good, marker = tmp_path / "good.pt", tmp_path / "ran"
    torch.save({"latents": torch.zeros(2, 1, 8, 8), "labels": torch.full((2,), -1)}, good)
    bad = tmp_path / "latents.pt"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[:200])
    elif damage == "garbage":
        bad.write_bytes(b"\x00not a torch file" * 10)
    else:
        malicious(bad, marker)
    line = one_error_line(invoke("interpolate", run_dir, "--mode", "slerp", "--latents", bad,
                                 "--out", tmp_path / "i"))
    assert f"{bad}: not a latents file of `gentool invert`" in line, line
    assert not marker.exists()


def test_disk_full_while_comparing_leaves_no_partial_figure(run_dir, tmp_path, disk_full):
    out = tmp_path / "c.png"
    line = one_error_line(invoke("compare", run_dir, "--out", out, "--svg"))
    assert line.startswith(f"error: {out}: disk full"), line
    assert list(tmp_path.glob("c.*")) == [] and list(tmp_path.glob(".c.*")) == []

# -- a read-only file system --------------------------------------------------------------------

def test_read_only_run_directory(run_dir, tmp_path, monkeypatch):
    read_only(monkeypatch, run_dir)
    line = one_error_line(invoke("run", tmp_path / "toy.toml", "--set", "train.steps=4", "--no-tasks"))
    assert "read-only file system" in line and str(run_dir) in line, line
    # readers of the read-only run write elsewhere and work
    result = invoke("sample", run_dir, "--n", 2, "--steps", 2, "--grid-only", "--out", tmp_path / "elsewhere")
    assert result.exit_code == 0, result.output
    result = invoke("export", run_dir, "--out", tmp_path / "elsewhere" / "toy.safetensors")
    assert result.exit_code == 0 and (tmp_path / "elsewhere" / "toy.safetensors").is_file(), result.output
    result = invoke("eval", run_dir, "--metrics", "loss_t", "--data-batches", 1, "--out", tmp_path / "elsewhere" / "r.json")
    assert result.exit_code == 0 and (tmp_path / "elsewhere" / "r.json").is_file(), result.output
    monkeypatch.undo()
    assert all_checkpoints_load(run_dir) == [2]


def test_an_output_path_under_a_regular_file(run_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    line = one_error_line(invoke("sample", run_dir, "--n", 2, "--steps", 2, "--out", blocker / "sub"))
    assert f"{blocker}: is a file, not a directory" in line or f"{blocker / 'sub'}: not a directory" in line, line


def test_eval_prints_its_report_before_writing_it(run_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = invoke("eval", run_dir, "--metrics", "loss_t", "--data-batches", 1, "--out", blocker / "r.json")
    assert result.exit_code == 2 and f"{blocker}: is a file, not a directory" in result.output, result.output
    assert '"loss_t' in result.output, result.output  # the numbers were shown before the write failed



# -- gentool features train -------------------------------------------------------------------

def features_train(out: Path, *extra):
    return invoke("features", "train", "toy", "--steps", 2, "--batch-size", 8, "-o", out, *extra)


@pytest.mark.parametrize("extra, expected", [(["--lr", "nan"], "--lr nan: must be a finite number above 0"),
                                             (["--lr", "-1"], "--lr -1.0: must be a finite number above 0"),
                                             (["--device", "gpu7"], "--device: 'gpu7' is not a device")])
def test_features_train_refuses_a_bad_value_in_one_line(tmp_path, extra, expected):
    out = tmp_path / "w.safetensors"
    line = one_error_line(features_train(out, *extra))
    assert line.startswith(f"error: {expected}"), line
    assert not out.exists()


def test_features_train_checks_the_output_before_it_trains(tmp_path, monkeypatch, disk_full):
    """A full disk and a read-only folder fail before the first step, and leave no file (0-byte or temporary)."""
    out = tmp_path / "full" / "w.safetensors"
    result = features_train(out)
    line = one_error_line(result)
    assert line.startswith(f"error: {out}: disk full"), line
    assert "step 1/2" not in result.output and list(out.parent.iterdir()) == []
    monkeypatch.undo()
    read_only(monkeypatch, tmp_path / "ro")
    out = tmp_path / "ro" / "w.safetensors"
    result = features_train(out)
    line = one_error_line(result)
    assert "read-only file system" in line and str(tmp_path / "ro") in line, line
    assert "step 1/2" not in result.output
    monkeypatch.undo()
    result = features_train(out)  # the same command where it can write: trains, then saves
    assert result.exit_code == 0 and "step 1/2" in result.output and out.is_file(), result.output

# -- one writer per run directory -------------------------------------------------------------

def gentool_process(*args, script: str = "") -> subprocess.Popen:
    env = {**os.environ, "GENTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "GENTOOL_DISABLE_PLUGIN_AUTOLOAD": "1"}
    code = textwrap.dedent(script) + "\nimport sys\nfrom gentool.__main__ import main\nsys.argv = ['gentool', *sys.argv[1:]]\nmain()\n"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, errs = proc.communicate()
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}:\n{out}\n{errs}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_runs_on_one_directory(tmp_path):
    from _tiny import write_recipe

    recipe = write_recipe(tmp_path, name="busy", steps=100_000, checkpoint_every=2)
    run_dir = tmp_path / "runs" / "busy"
    first = gentool_process("run", recipe, "--no-tasks")
    try:
        wait_for(lambda: len(ckpt.list_checkpoints(run_dir)) >= 1, first, "the first checkpoint")
        for extra in ([], ["--no-resume", "--force"]):  # neither resumes nor moves the checkpoints of a live run
            line = one_error_line(invoke("run", recipe, "--no-tasks", *extra))
            assert f"process {first.pid}" in line and str(run_dir) in line, line
        assert first.poll() is None, "the second run must not disturb the first"
        result = invoke("sample", run_dir, "--n", 2, "--steps", 2, "--grid-only", "--out", tmp_path / "read")
        assert result.exit_code == 0, result.output  # readers keep working while it trains
    finally:
        first.send_signal(signal.SIGINT)  # saves a checkpoint and stops
        out, errs = first.communicate(timeout=120)
    assert first.returncode == 130, errs
    steps = all_checkpoints_load(run_dir)
    assert steps and all(s % 2 == 0 or s == steps[-1] for s in steps)
    assert lock_is_free(run_dir)


KILL_MID_WRITE = """
import os, signal
import gentool.atomic as atomic

real_mkstemp, real_write = atomic.tempfile.mkstemp, atomic._Recorder.write
target = {}

def mkstemp(*args, **kwargs):
    fd, name = real_mkstemp(*args, **kwargs)
    target["now"] = name
    return fd, name

def write(self, data):
    n = real_write(self, data)
    if ".step_00000004.pt." in target.get("now", ""):
        target["bytes"] = target.get("bytes", 0) + n
        if target["bytes"] > 4096:  # well inside the file: half a checkpoint on disk
            os.kill(os.getpid(), signal.SIGKILL)
    return n

atomic.tempfile.mkstemp = mkstemp
atomic._Recorder.write = write
"""


def test_sigkill_during_a_checkpoint_write(run_dir, tmp_path):
    recipe = tmp_path / "toy.toml"
    victim = gentool_process("run", recipe, "--set", "train.steps=6", "--no-tasks", script=KILL_MID_WRITE)
    out, errs = victim.communicate(timeout=180)
    assert victim.returncode == -signal.SIGKILL, errs
    partial = list((run_dir / ckpt.CHECKPOINT_DIR).glob(".step_00000004.pt.*.tmp"))
    assert partial and partial[0].stat().st_size > 0, "the kill came in the middle of the write"
    assert [int(ckpt.load_checkpoint(p)["step"]) for p in ckpt.list_checkpoints(run_dir)] == [2]
    assert lock_is_free(run_dir)  # the OS dropped the dead process's lock
    result = invoke("run", recipe, "--set", "train.steps=6", "--no-tasks")  # resumes from 2
    assert result.exit_code == 0, result.output
    assert all_checkpoints_load(run_dir) == [2, 4, 6]  # the partial file was cleaned up (its process is dead)


def test_clean_partial_keeps_a_live_writers_temporary_file(tmp_path):
    folder = tmp_path / ckpt.CHECKPOINT_DIR
    folder.mkdir()
    parent = os.getppid()  # alive, and not this process
    live = folder / f".step_00000004.pt.abc123.{parent}.tmp"
    dead = folder / ".step_00000002.pt.def456.999999999.tmp"
    legacy = folder / ".step_00000002.pt.oldname.tmp"
    for path in (live, dead, legacy):
        path.write_bytes(b"x")
    assert sorted(ckpt.clean_partial(tmp_path)) == sorted([dead, legacy])
    assert live.exists()


def test_the_lock_names_the_holder_and_is_released(tmp_path):
    lock = RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    code = f"from gentool.engine.lock import RunLock; RunLock({str(tmp_path)!r}).acquire()"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.returncode != 0 and f"process {os.getpid()}" in other.stderr
    lock.release()
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0



def test_the_lock_never_follows_a_symbolic_link(run_dir, tmp_path):
    """A planted ``.gentool.lock -> some file``: gentool neither truncates that file nor writes its PID there."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    (run_dir / LOCK_FILE).unlink(missing_ok=True)  # the copied run has its own
    (run_dir / LOCK_FILE).symlink_to(precious)
    line = one_error_line(invoke("run", tmp_path / "toy.toml", "--set", "train.steps=4", "--no-tasks"))
    assert f"{run_dir / LOCK_FILE}: is a symbolic link" in line, line
    assert precious.read_text() == "keep me\n"
    assert all_checkpoints_load(run_dir) == [2]  # nothing trained without the lock

# -- results that survive ----------------------------------------------------------------------

def test_a_run_without_a_loadable_checkpoint_is_an_error(run_dir, tmp_path):
    for path in ckpt.list_checkpoints(run_dir):
        path.write_bytes(b"not a checkpoint")
    for command in (["sample", run_dir, "--n", 2, "--out", tmp_path / "s"], ["export", run_dir],
                    ["inpaint", run_dir, "--out", tmp_path / "i"], ["invert", run_dir, "--out", tmp_path / "v"]):
        line = one_error_line(invoke(*command))
        assert ("none of its 1 checkpoint file(s)" in line and "train.steps = 0" in line
                or "no readable checkpoint" in line), (command, line)
    # a recipe that trains nothing samples its initial weights on purpose (with a warning)
    result = invoke("sample", run_dir, "--n", 2, "--steps", 2, "--grid-only", "--out", tmp_path / "s0",
                    "--set", "train.steps=0")
    assert result.exit_code == 0 and "untrained" in result.output, result.output


def test_a_damaged_reference_cache_is_rebuilt(tmp_path, monkeypatch):
    key = {"data": "toy", "split": "train", "feature_extractor": "stand-in"}
    computed = []

    def compute(*args, **kwargs):
        computed.append(1)
        return {"f": torch.arange(64, dtype=torch.float32).reshape(16, 4)}

    monkeypatch.setattr(reference, "reference_key", lambda *a, **k: key)
    monkeypatch.setattr(reference, "compute_features", compute)
    feats, info = reference.reference_features(None, None, split="train", cache_dir=tmp_path)
    path = Path(info["cache_file"])
    for damage in ("flip", "truncate"):
        data = bytearray(path.read_bytes())
        if damage == "flip":
            at = data.find(torch.arange(64, dtype=torch.float32).numpy().tobytes()[40:56])
            assert at > 0
            data[at] ^= 0x10
        else:
            data = data[: len(data) // 2]
        path.write_bytes(bytes(data))
        reference._MEMORY.clear()  # a new process: only the file remains
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again, info = reference.reference_features(None, None, split="train", cache_dir=tmp_path)
        assert info["cached"] is False and any("damaged" in str(w.message) for w in caught), damage
        assert torch.equal(again["f"], feats["f"])
    assert len(computed) == 3
    reference._MEMORY.clear()
    assert reference.reference_features(None, None, split="train", cache_dir=tmp_path)[1]["cached"] is True



def test_a_damaged_metrics_file_stops_neither_compare_nor_a_resumed_run(run_dir, tmp_path):
    """Lines that are not UTF-8, not JSON, nested too deep, or whose step is not an integer are skipped."""
    metrics = run_dir / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(good + b'\xff\xfe{"step": 3, "loss": 1.0}\n{"step": "3", "loss": 1.0}\n'
                        b'{"step": 2.5, "loss": 1.0}\n{"step": null}\n' + b"[" * 100_000 + b"\n"
                        + '{"step": 2, "test_loss/t=x": 1.0, "test_loss/t=\u00b2": 1.0}\n'.encode())
    result = invoke("compare", run_dir, "--out", tmp_path / "c.png")
    assert result.exit_code == 0 and (tmp_path / "c.png").is_file(), result.output
    result = invoke("run", tmp_path / "toy.toml", "--set", "train.steps=4", "--no-tasks")  # resumes from 2
    assert result.exit_code == 0 and "could not draw the plots" not in result.output, result.output
    assert all_checkpoints_load(run_dir) == [2, 4]
    steps = [json.loads(line)["step"] for line in metrics.read_text(encoding="utf-8").splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4 and all(type(s) is int for s in steps)


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt()])
def test_a_logger_raising_systemexit_or_keyboardinterrupt_does_not_stop_training(tmp_path, monkeypatch, raised):
    """The logger is switched off with a warning; the run trains to the end and saves its checkpoint."""
    from _tiny import build, quiet_train, write_recipe
    from gentool_loggers.jsonl import JsonlLogger

    def log_scalars(self, step, scalars):
        if step >= 2:
            raise raised

    monkeypatch.setattr(JsonlLogger, "log_scalars", log_scalars)
    run = build(write_recipe(tmp_path, steps=6, checkpoint_every=6, log_every=2))
    result, messages = quiet_train(run)
    assert result.step == 6 and not result.interrupted
    assert any(f"logger 'jsonl' failed in log_scalars ({type(raised).__name__}" in m for m in messages), messages
    assert all_checkpoints_load(run.run_dir) == [6]


def test_a_real_ctrl_c_twice_still_stops_inside_a_logger(tmp_path, monkeypatch):
    """The second Ctrl-C while training stops at once (StopNow), even when it arrives inside a logger call."""
    from _tiny import build, quiet_train, write_recipe
    from gentool_loggers.jsonl import JsonlLogger

    def log_scalars(self, step, scalars):
        os.kill(os.getpid(), signal.SIGINT)  # the first asks to save and stop; the second stops now
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(JsonlLogger, "log_scalars", log_scalars)
    run = build(write_recipe(tmp_path, steps=6, checkpoint_every=6, log_every=2))
    with pytest.raises(KeyboardInterrupt):
        quiet_train(run)

# -- Ctrl-C -------------------------------------------------------------------------------------

def test_ctrl_c_while_starting_exits_130_without_a_traceback():
    """A KeyboardInterrupt while the command line imports (deterministic: raised by the import of typer)."""
    script = """
import builtins
real = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "typer":
        raise KeyboardInterrupt
    return real(name, *args, **kwargs)
builtins.__import__ = interrupted
"""
    proc = gentool_process("list-plugins", script=script)
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in errs and "KeyboardInterrupt" not in errs, errs


def test_ctrl_c_inside_a_command_exits_130(tiny_recipe, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("gentool.recipe.load_recipe", interrupted)
    result = runner.invoke(app, ["check", str(tiny_recipe)])
    assert result.exit_code == 130 and "Traceback" not in result.output
