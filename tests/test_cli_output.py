"""What the command line writes when its output is not a terminal (a log file, a pipe, CI, nohup)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gentool.cli import app
from gentool.progress import PlainProgress

ROOT = Path(__file__).resolve().parents[1]


def piped(*args, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m gentool ARGS`` with stdout and stderr into one pipe, progress on (no GENTOOL_NO_PROGRESS)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("GENTOOL_NO_PROGRESS", "COLUMNS", "TERMINAL_WIDTH")}
    environ.update({"OMP_NUM_THREADS": "1", "GENTOOL_DISABLE_PLUGIN_AUTOLOAD": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "gentool", *map(str, args)], cwd=ROOT, env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def test_plain_progress_prints_a_line_per_share_done_and_a_last_one():
    now = [0.0]
    lines: list[str] = []
    with PlainProgress(write=lines.append, every_percent=25, min_interval=1.0, max_interval=100.0,
                       clock=lambda: now[0]) as bar:
        task = bar.add_task("sampling", total=8)
        for _ in range(8):
            now[0] += 1.0
            bar.advance(task)
    assert lines == ["sampling: 2/8 (25%), 2.0 s, about 6.0 s left",
                     "sampling: 4/8 (50%), 4.0 s, about 4.0 s left",
                     "sampling: 6/8 (75%), 6.0 s, about 2.0 s left",
                     "sampling: 8/8 (100%), 8.0 s"]


def test_plain_progress_waits_the_minimum_interval_and_speaks_after_the_maximum():
    now = [0.0]
    lines: list[str] = []
    with PlainProgress(write=lines.append, every_percent=5, min_interval=10.0, max_interval=30.0,
                       clock=lambda: now[0]) as bar:
        task = bar.add_task("eval", total=1000)
        for _ in range(4):  # 40% in 4 s: too soon for a line
            now[0] += 1.0
            bar.advance(task, 100)
        assert lines == []
        now[0] += 6.0
        bar.advance(task, 1)  # 10 s since the start, 40.1% done
        assert lines[-1].startswith("eval: 401/1000 (40%), 10.0 s")
        now[0] += 31.0
        bar.advance(task, 1)  # a tiny step, but 31 s of silence
        assert len(lines) == 2 and lines[-1].startswith("eval: 402/1000")
    assert len(lines) == 2  # not finished: no last line


def test_a_short_loop_prints_nothing():
    lines: list[str] = []
    with PlainProgress(write=lines.append, min_interval=5.0) as bar:
        task = bar.add_task("frame 1/8", total=3)
        for _ in range(3):
            bar.advance(task)
    assert lines == []


def test_plain_progress_lists_its_tasks_as_rich_does():
    """gentool eval's grid advances ``bar.task_ids[-1]``: off a terminal it crashed (no task_ids)."""
    from rich.progress import Progress

    for bar in (PlainProgress(write=lambda line: None), Progress(disable=True)):
        first, second = bar.add_task("a", total=2), bar.add_task("b", total=2)
        assert bar.task_ids == [first, second]
        bar.advance(bar.task_ids[-1], 1)


def test_run_into_a_pipe_shows_progress_in_order_and_whole_lines(tiny_recipe):
    result = piped("run", tiny_recipe, env={"GENTOOL_PROGRESS_EVERY": "0"})
    out = result.stdout
    assert result.returncode == 0, out
    lines = out.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [s.split(":")[0] for s in steps] == ["step 2/6 (33%)", "step 4/6 (67%)", "step 6/6 (100%)"]
    sampling = [i for i, line in enumerate(lines) if re.match(r"sampl.*: \d+/50 \(\d+%\)", line)]
    task = lines.index("task sample")
    wrote = [i for i, line in enumerate(lines) if line.startswith("wrote ")]
    assert sampling and wrote and task < sampling[0] < sampling[-1] < wrote[0], out
    assert "50/50 (100%)" in lines[sampling[-1]]
    assert "…" not in out and "━" not in out and "\r" not in out  # no bar, nothing cut


def test_errors_and_paths_are_never_wrapped(tmp_path):
    missing = tmp_path / ("a_folder_with_a_long_name_" * 4) / ("recipe_file_whose_name_goes_on_" * 3 + ".toml")
    result = piped("check", missing)
    assert result.returncode == 2
    error = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(missing) in error[0], result.stdout


def test_list_plugins_off_a_terminal_is_one_plain_line_per_component():
    result = CliRunner().invoke(app, ["list-plugins"])
    assert result.exit_code == 0, result.output
    assert not set("│─┃━┏") & set(result.output)
    assert "sampler ddim (plugin samplers): " in result.output
    assert "plugin schedules (gentool " in result.output


def test_flags_show_no_value_placeholder_and_version_prints():
    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "--no-resume" in result.output
    assert "<bool>" not in result.output
    version = CliRunner().invoke(app, ["--version"])
    import gentool

    assert version.exit_code == 0 and version.output.strip() == f"gentool {gentool.__version__}"
