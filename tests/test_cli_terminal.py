"""``gentool run`` in a terminal (a pseudo-terminal): messages during the live progress bar get lines of their own."""

from __future__ import annotations

import os
import re
import select
import sys
import time

import pytest

from _tiny import write_recipe

pty = pytest.importorskip("pty")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(args: list[str], *, interrupt_after: bytes, timeout: float = 120.0) -> bytes:
    """What ``python -m gentool ARGS`` writes to a terminal; Ctrl-C typed once ``interrupt_after`` has appeared."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its standard input, output and error
        os.environ.pop("GENTOOL_NO_PROGRESS", None)
        os.environ["COLUMNS"] = "100"
        os.execv(sys.executable, [sys.executable, "-m", "gentool", *args])
    out, typed, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                out += data
            if not typed and interrupt_after in out:
                os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT and echoes ^C at the cursor
                typed = True
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    return out


def test_the_ctrl_c_message_starts_a_line_of_its_own_not_the_end_of_the_bar(tmp_path):
    recipe = write_recipe(tmp_path, steps=100_000, checkpoint_every=100_000, log_every=1)
    out = run_in_terminal(["run", str(recipe), "--no-tasks"], interrupt_after=b"steps/s")
    assert b"interrupted by SIGINT" in out, out[-2000:]
    line = out[:out.index(b"interrupted by SIGINT")].rsplit(b"\n", 1)[-1]  # the terminal line it is printed on
    shown = ANSI.sub(b"", line.rsplit(b"\r", 1)[-1])  # what is left of that line after the last carriage return
    assert shown == b"", line  # glued: "... 131 img/s" (the bar) before it
