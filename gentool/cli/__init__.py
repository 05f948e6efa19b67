"""gentool's command line: a thin Typer layer over the Python API."""

from __future__ import annotations

from gentool.cli.app import app

# Each module adds its commands to ``app``.
from gentool.cli import bench_cmd, eval_cmd, export_cmd, plugins_cmd, run_cmd, tasks_cmd  # noqa: E402,F401
from gentool.cli import version_cmd  # noqa: E402,F401
from gentool.cli.output import line_buffered_stdout  # noqa: E402


def main() -> None:
    import sys

    line_buffered_stdout()  # off a terminal, stdout's lines and stderr's arrive in the order written
    tasks_cmd.read_options_only_for(sys.argv[1:2])  # the command being run; --help loads no components
    app()
