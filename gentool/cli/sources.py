"""The trained run a command reads (its SOURCE argument) and where the command writes by default.

``gentool sample``, ``eval``, ``invert`` and the task commands (``interpolate``,
``inpaint``, ...) read a SOURCE: a run directory, a checkpoint file or a
``.safetensors`` file written by ``gentool export``. Without ``--out`` they
write:

* for a run directory, or a checkpoint inside one: into the run directory,
  beside its checkpoints and the outputs of ``gentool run``
  (``RUN_DIR/generated/<what>``; ``gentool eval``: ``RUN_DIR/eval/``);
* for any other file (exported weights, a checkpoint copied out of its run):
  into ``generated/<file stem>/<what>`` under the **current directory**, never
  beside the file, whose folder may be read-only, a download cache or someone
  else's.

:func:`default_out` is the one place that decides; each command prints the
paths it wrote. Importing this module imports nothing but the standard library.
"""

from __future__ import annotations

from pathlib import Path

GENERATED = "generated"  # the folder of a command's outputs, in a run directory or the current directory

SOURCE_HELP = ("A run directory, a checkpoint file or an exported .safetensors file. Outputs go into the run "
               "directory, or, for a file outside one, into ./generated/<file stem>/ (--out to choose).")


def in_run_dir(run) -> bool:
    """Whether ``run`` was loaded from a run directory (or a checkpoint in one), not from a file outside one."""
    from gentool.run import RESOLVED_RECIPE  # start-up: gentool.run imports torch; a command has loaded it already

    return (Path(run.run_dir) / RESOLVED_RECIPE).is_file()


def default_out(source: str | Path, run, *parts: str, in_run: str = GENERATED) -> Path:
    """Where a command that read ``run`` from ``source`` writes ``parts`` when not given ``--out``.

    Args:
        source: the command's SOURCE argument (a run directory, a checkpoint or an exported file).
        run: the :class:`gentool.Run` loaded from it.
        parts: the output's path below the command's folder, e.g. ``("interpolate",)``.
        in_run: the folder of the run directory that holds ``parts`` (``""``: the run directory itself).

    Returns:
        ``RUN_DIR/<in_run>/<parts>`` for a run directory or a checkpoint in one, else
        ``generated/<source's stem>/<parts>``, relative to the current directory.
    """
    if in_run_dir(run):
        return Path(run.run_dir, in_run, *parts)
    return Path(GENERATED, Path(source).stem, *parts)
