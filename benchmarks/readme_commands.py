"""The shell commands of README.md (or docs/quickstart.md), in order, as one script for a fresh clone.

    python3 benchmarks/readme_commands.py --list                  # the shell blocks, numbered
    python3 benchmarks/readme_commands.py > /tmp/readme.sh        # every shell block, in order
    python3 benchmarks/readme_commands.py --skip 4 > /tmp/readme.sh   # all but block 4 (the GPU one)
    python3 benchmarks/readme_commands.py docs/quickstart.md --only 1,3

Then, in a fresh clone with nothing activated: ``bash -e /tmp/readme.sh``.
This is what a newcomer does when pasting the blocks in order into one shell.
A shell block is a fenced block whose language is bash, sh, shell or console.
Standard library only: it runs before the virtual environment exists.

The functions are also what ``tests/test_readme.py`` checks: that a bare
``gentool`` (or ``python``, ``torchrun``...) comes only after the environment is
created and activated (:func:`venv_problems`), and that every ``gentool
<command> --option`` named in the README and the quickstart exists.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
# commands that exist only in the virtual environment: bare, they need `source .venv/bin/activate` first
VENV_ONLY = {"gentool", "python", "pip", "pytest", "torchrun", "lint-imports"}
ACTIVATE = re.compile(r"^(source|\.)\s+\.venv/bin/activate\b")
SEPARATORS = re.compile(r"&&|\|\||[;|()]")  # where one command of a line ends and the next starts


@dataclass
class Block:
    """A fenced code block: its number among the shell blocks (1-based; 0: not shell), first line, language."""

    number: int
    line: int  # the line of its first command, 1-based
    language: str
    lines: list[str] = field(default_factory=list)


def blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, in order; shell blocks numbered 1, 2, ..."""
    out: list[Block] = []
    current: Block | None = None
    fence = ""
    shell = 0
    for i, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if current is None and match:
            fence, language = match.group(2), match.group(3).lower()
            shell += language in SHELL
            current = Block(shell if language in SHELL else 0, i + 1, language)
        elif current is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip(fence[0]).strip():
            out.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    return out


def shell_blocks(text: str) -> list[Block]:
    return [b for b in blocks(text) if b.number]


def commands(block: Block) -> list[tuple[int, str]]:
    """``(line, command)`` for each command of a shell block: its lines split at ``&&``, ``;``, ``|``..."""
    out = []
    for offset, line in enumerate(block.lines):
        line = re.sub(r"(^|\s)#.*$", "", line)  # a trailing comment
        for part in SEPARATORS.split(line):
            if part.strip():
                out.append((block.line + offset, part.strip()))
    return out


def program(command: str) -> str:
    """The program a command runs: ``gentool`` for ``gentool run x``; ``.venv/bin/gentool`` stays as written."""
    words = command.split()
    while words and re.match(r"^\w+=", words[0]):  # VAR=value before the program
        words.pop(0)
    return words[0] if words else ""


def venv_problems(text: str) -> list[tuple[int, str, str]]:
    """``(line, command, why)`` for each command that would fail in a fresh shell for want of the environment.

    A bare venv-only command (``gentool``, ``python``, ``torchrun``...) before
    ``source .venv/bin/activate``, or ``.venv/bin/...`` or the activation
    before ``python3 -m venv .venv`` created the environment.
    """
    created, active, bad = False, False, []
    for block in shell_blocks(text):
        for line, command in commands(block):
            if ".venv" in command and not created and not command.startswith("python3 -m venv .venv"):
                bad.append((line, command, "uses .venv before `python3 -m venv .venv` created it"))
            if command.startswith("python3 -m venv .venv"):
                created = True
            elif ACTIVATE.match(command):
                active = True
            elif program(command) in VENV_ONLY and not active:
                bad.append((line, command, "bare, before `source .venv/bin/activate`: command not found"))
    return bad


def code_spans(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of every command-like piece: each line of a shell block and each inline code span."""
    out: list[tuple[int, str]] = []
    lines = text.splitlines()
    for block in blocks(text):
        if block.number:
            out += [(block.line + k, line) for k, line in enumerate(block.lines)]
        for k in range(block.line - 2, min(block.line + len(block.lines), len(lines))):  # the fences too (0-based)
            lines[k] = ""  # prose only: a block's backticks are not inline code
    prose = "\n".join(lines)
    for match in re.finditer(r"`([^`]+)`", prose):  # an inline span may continue on the next line
        out.append((prose.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split())))
    return out


GENTOOL = re.compile(r"(?:^|[\s(])(?:\S*/)?gentool\s+(.*)$")


def gentool_invocations(text: str) -> list[tuple[int, list[str]]]:
    """``(line, words)`` of each ``gentool ...`` in the code: the words after ``gentool`` up to the command's end."""
    out = []
    for line, code in code_spans(text):
        code = re.sub(r"(^|\s)#.*$", "", code)
        for part in SEPARATORS.split(code):
            match = GENTOOL.search(part)
            if match:
                try:
                    words = shlex.split(match.group(1))
                except ValueError:  # an unbalanced quote in prose
                    words = match.group(1).split()
                out.append((line, words))
    return out


def script(text: str, *, source: str, only: set[int] | None = None, skip: set[int] = frozenset()) -> str:
    """The chosen shell blocks as one script, each headed by where it comes from."""
    parts = [f"# the shell blocks of {source}, in order (made by benchmarks/readme_commands.py); run with bash -e"]
    for block in shell_blocks(text):
        if (only is None or block.number in only) and block.number not in skip:
            parts.append(f"\n# block {block.number}, {source} line {block.line}\n" + "\n".join(block.lines))
    return "\n".join(parts) + "\n"


def _numbers(text: str) -> set[int]:
    return {int(n) for n in text.split(",") if n.strip()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=str(ROOT / "README.md"), help="Markdown file [default: README.md]")
    parser.add_argument("--only", type=_numbers, help="comma-separated block numbers to keep")
    parser.add_argument("--skip", type=_numbers, default=set(), help="comma-separated block numbers to leave out")
    parser.add_argument("--list", action="store_true", help="list the shell blocks instead")
    args = parser.parse_args(argv)
    path = Path(args.file)
    text = path.read_text(encoding="utf-8")
    if args.list:
        for block in shell_blocks(text):
            first = block.lines[0] if block.lines else ""
            print(f"{block.number}: line {block.line}, {len(block.lines)} line(s): {first[:100]}")
        return
    sys.stdout.write(script(text, source=path.name, only=args.only, skip=args.skip))


if __name__ == "__main__":
    main()
