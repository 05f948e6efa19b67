"""README.md and docs/quickstart.md work pasted in order into a fresh shell (benchmarks/readme_commands.py).

The commands themselves (training for minutes) are not run here: the order of
the virtual environment's creation, activation and use is checked, and every
``gentool <command> --option`` the two pages name must exist in the CLI.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main

from gentool.cli import app, tasks_cmd

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/quickstart.md"]

_spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "benchmarks" / "readme_commands.py")
readme = sys.modules.setdefault("readme_commands", importlib.util.module_from_spec(_spec))  # dataclasses look it up
_spec.loader.exec_module(readme)


def text(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


def unknown(words: list[str]) -> str | None:
    """Why ``gentool <words>`` would fail to parse (an unknown command or option), or None."""
    command = typer.main.get_command(app)
    ctx = click.Context(command, info_name="gentool")
    path = ["gentool"]
    rest = list(words)
    while rest and hasattr(command, "list_commands") and not rest[0].startswith("-"):  # a group (typer's own click)
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            return f"no command `{' '.join(path + rest[:1])}`"
        path.append(rest.pop(0))
        command, ctx = sub, click.Context(sub, info_name=rest and path[-1], parent=ctx)
    known = {opt for p in command.params for opt in [*p.opts, *p.secondary_opts]} | {"--help"}
    for word in rest:
        if word.startswith("--") and word.split("=")[0] not in known:
            return f"`{' '.join(path)}` has no option {word.split('=')[0]}"
    return None


@pytest.fixture
def every_task_option(monkeypatch):
    monkeypatch.setattr(tasks_cmd, "_OPTIONS_FOR", None)  # task commands show all their options, as when run


@pytest.mark.parametrize("page", PAGES)
def test_the_environment_is_created_and_activated_before_a_bare_gentool(page):
    problems = readme.venv_problems(text(page))
    assert not problems, "\n".join(f"{page}:{line}: {command}: {why}" for line, command, why in problems)
    first = readme.shell_blocks(text(page))[0]
    assert ".venv/bin/gentool run" in "\n".join(first.lines)  # the first block trains through the new environment


@pytest.mark.parametrize("page", PAGES)
def test_every_gentool_command_and_option_named_exists(page, every_task_option):
    found = readme.gentool_invocations(text(page))
    named = {words[0] for _, words in found if words and words[0][0].isalpha()}
    assert {"run", "sweep"} <= named  # the pages were read: both name these
    bad = [f"{page}:{line}: gentool {' '.join(words)}: {why}" for line, words in found
           if words and (words[0][0].isalpha() or words[0].startswith("-")) and (why := unknown(words))]
    assert not bad, "\n".join(bad)


def test_the_checks_catch_a_renamed_command_or_option_and_a_missing_activation(every_task_option):
    page = "```bash\npython3 -m venv .venv && .venv/bin/pip install -e .\ngentool sampel runs/x\n```\n"
    assert [why for _, _, why in readme.venv_problems(page)] == [
        "bare, before `source .venv/bin/activate`: command not found"]
    assert readme.venv_problems("```bash\nsource .venv/bin/activate\n```\n")[0][2].startswith("uses .venv before")
    (line, words), = readme.gentool_invocations(page)
    assert line == 3 and unknown(words) == "no command `gentool sampel`"
    assert unknown(["sample", "RUN", "--stepz", "3"]) == "`gentool sample` has no option --stepz"
    assert unknown(["interpolate", "RUN", "--mode", "slerp"]) is None  # a task command's own options count
    assert unknown(["--version"]) is None and unknown(["--verzion"]) == "`gentool` has no option --verzion"


def test_the_extracted_script_is_the_shell_blocks_in_order_and_parses():
    script = readme.script(text("README.md"), source="README.md")
    blocks = readme.shell_blocks(text("README.md"))
    starts = [script.index("\n".join(b.lines)) for b in blocks]
    assert starts == sorted(starts) and len(blocks) >= 3
    assert "import gentool" not in script and "[denoiser]" not in script  # the python and toml blocks are not shell
    assert "block 2" not in readme.script(text("README.md"), source="README.md", skip={2})
    if shutil.which("bash"):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # syntax only: nothing runs


@pytest.mark.parametrize("page", PAGES)
def test_the_install_says_in_one_copyable_command_how_to_get_the_cpu_build(page):
    """The first command installs with pip (what CI runs, offline from the package registries); the page also gives
    one command, pasted as it is, that installs the CPU-only build on a machine without a GPU (issue 29: no 6 GB
    of CUDA libraries); nothing to fill in (a <placeholder> cannot be pasted)."""
    import re

    page_text = text(page)
    blocks = readme.shell_blocks(page_text)
    assert ".venv/bin/pip install -e ." in "\n".join(blocks[0].lines)
    cpu = "python3 -m venv .venv && .venv/bin/pip install uv && .venv/bin/uv pip install --python .venv/bin/python " \
          "--torch-backend auto -e ."
    assert cpu in page_text.replace("\n   ", " "), f"{page} should give the CPU-only install as one command"
    placeholders = [line for b in blocks for line in b.lines if re.search(r"<[A-Za-z][^<>]*>", line)]
    placeholders += [line for line in page_text.splitlines() if "--torch-backend" in line and re.search(r"<[A-Za-z]", line)]
    assert not placeholders, placeholders


def test_the_readmes_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in text("README.md"), "the README's test command and .ci/run's must be the same command"
