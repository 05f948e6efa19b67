"""docs/design_space.md's table of combinations says what ``gentool check`` does: each row is checked here.

A row names a process, an objective (its options after ``;``, TOML) and a
sampler; "ok" rows must pass ``gentool check`` and the others must be refused
in one line holding the row's quoted words (which name both sides).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from gentool.cli import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "design_space.md"
HEADING = "## What `gentool check` says"


def rows() -> list[tuple[str, str, str, str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(HEADING):]
    out = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 4 and cells[0].startswith("`") and not cells[0].startswith("`["):
            out.append(tuple(c.strip("`") if i < 3 else c for i, c in enumerate(cells)))
    return out


def recipe(tmp: Path, process: str, objective: str, sampler: str) -> Path:
    name, *options = [part.strip() for part in objective.split(";")]
    data = {
        "run": {"name": "ds", "output_dir": (tmp / "runs").as_posix(), "device": "cpu", "compile": False},
        "data": {"name": "toy", "n": 16, "image_size": 8, "channels": 1},
        "process": {"name": process},
        "denoiser": {"name": "unet", "in_channels": 1, "image_size": 8, "channels": 32, "channel_mult": [1],
                     "num_res_blocks": 1, "attention_resolutions": [],
                     "learn_sigma": name == "hybrid"},
        "objective": {"name": name, **tomllib.loads("\n".join(options))},
        "sampler": {"name": sampler, "steps": 4},
        "train": {"steps": 1, "batch_size": 4},
    }
    if process == "vp":
        data["schedule"] = {"name": "linear", "timesteps": 20}
    path = tmp / "recipe.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def test_the_table_has_valid_and_refused_rows():
    table = rows()
    assert len(table) >= 15
    assert any(r[3] == "ok" for r in table) and any(r[3] != "ok" for r in table)


@pytest.mark.parametrize("process, objective, sampler, says", rows(), ids=lambda v: str(v)[:40])
def test_gentool_check_says_what_the_table_says(tmp_path, process, objective, sampler, says):
    result = CliRunner().invoke(app, ["check", str(recipe(tmp_path, process, objective, sampler))])
    if says == "ok":
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code != 0, result.output
    quoted = says.strip('"')
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and quoted in lines[0], result.output
