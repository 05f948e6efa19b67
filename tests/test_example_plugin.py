"""The example third-party plugin, installed with pip as a user would install it.

``plugins/examples/gentool-example`` is built into a wheel and installed with
pip into a temporary ``--target`` folder (so the shared environment is never
touched); putting that folder on ``sys.path`` is what installing it into the
environment does. Removing the folder uninstalls it. The last test follows
docs/plugins.md word for word in a fresh virtual environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gentool import plugins
from gentool.cli import app
from _packages import installed_package, on_sys_path, pip_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "examples" / "gentool-example"
DOC = ROOT / "docs" / "plugins.md"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example plugin pip-installed into a temporary site folder."""
    with installed_package(EXAMPLE, tmp_path_factory.mktemp("site"), "gentool_example") as site:
        assert (site / "gentool_example-0.1.0.dist-info" / "entry_points.txt").is_file()
        yield site


@pytest.fixture
def on_path(installed, monkeypatch):
    with on_sys_path(installed, monkeypatch) as site:
        yield site


def test_list_plugins_shows_the_package_and_its_version(on_path):
    result = CliRunner().invoke(app, ["list-plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.output)}
    for key in [("schedule", "quadratic"), ("sampler", "example_heun"), ("objective", "pseudo_huber"),
                ("logger", "csv"), ("command", "quadratic-betas")]:
        assert rows[key]["package"] == "gentool-example" and rows[key]["version"] == "0.1.0"
        assert rows[key]["plugin"] == "example" and rows[key]["module"] == "gentool_example"
    assert not [r for r in rows.values() if r["kind"] == "broken"]
    table = CliRunner().invoke(app, ["list-plugins"], env={"COLUMNS": "200"})
    assert re.search(r"example\W+gentool-example\W+0\.1\.0", table.output), table.output  # a table or plain lines


def test_the_installed_components_pass_gentools_contract_checks(on_path):
    from gentool.testing import check_sampler, check_schedule

    registry = plugins.registry()
    betas = check_schedule(registry.get("schedule", "quadratic").factory, timesteps=4, beta_start=0.01, beta_end=0.04)
    torch.testing.assert_close(betas.sqrt(), torch.linspace(0.1, 0.2, 4, dtype=torch.float64))  # sqrt evenly spaced
    check_sampler(registry.get("sampler", "example_heun").factory)
    check_sampler(registry.get("sampler", "example_heun").factory, second_order=False)


def test_a_recipe_using_its_components_runs(on_path, tmp_path):
    from gentool.api import run_recipe

    result = run_recipe(EXAMPLE / "example.toml", overrides=[f'run.output_dir="{tmp_path.as_posix()}"', "train.steps=4"],
                        progress=False, log=lambda m: None)
    run_dir = tmp_path / "example"
    resolved = (run_dir / "recipe.resolved.toml").read_text()
    assert 'name = "quadratic"' in resolved and 'name = "example_heun"' in resolved
    assert 'name = "pseudo_huber"' in resolved and type(result.run.objective).__name__ == "PseudoHuber"
    (name, task), = result.tasks
    assert name == "sample" and (run_dir / "sample" / "grid.png") in task.files
    assert result.run.step == 4
    # its logger was called: every scalar of metrics.jsonl is a row of metrics.csv
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    jsonl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == "step,name,value" and len(rows) - 1 == sum(len(r) - 1 for r in jsonl)
    assert any(row.startswith("4,loss,") for row in rows) and any(row.startswith("4,l2,") for row in rows)


def test_its_command_is_listed_and_runs(on_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "quadratic-betas" in listed.output, listed.output
    out = runner.invoke(app, ["quadratic-betas", "--timesteps", "3", "--beta-start", "0.01", "--beta-end", "0.09"])
    assert out.exit_code == 0, out.output
    assert [float(v) for v in out.output.split()] == [0.01, 0.04, 0.09]  # sqrt(beta) evenly spaced: 0.1, 0.2, 0.3


def test_uninstalling_removes_it(installed, monkeypatch, tmp_path):
    monkeypatch.delenv("GENTOOL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("GENTOOL_BLOCK_PLUGINS", raising=False)
    copy = tmp_path / "site"
    shutil.copytree(installed, copy)
    monkeypatch.syspath_prepend(str(copy))
    assert ("schedule", "quadratic") in plugins.load_plugins().registry
    shutil.rmtree(copy)  # what `pip uninstall` does to a --target install
    import importlib

    importlib.invalidate_caches()
    assert ("schedule", "quadratic") not in plugins.load_plugins().registry


# -- docs/plugins.md, word for word ------------------------------------------------------

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.S | re.M)


def tutorial_script(text: str) -> str:
    """A bash script doing what the page says: write each titled file, run each ``$ `` line.

    Only ```` ```console ```` blocks are run (their ``$ `` lines), and only
    blocks with a ``title="path"`` are written; ```` ```bash ```` and
    ```` ```text ```` blocks are for reading.
    """
    lines = ["set -euo pipefail"]
    for lang, info, body in FENCE.findall(text):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            lines += [f"mkdir -p \"$(dirname '{title.group(1)}')\"", f"cat > '{title.group(1)}' <<'GENTOOL_DOC_EOF'",
                      body.rstrip("\n"), "GENTOOL_DOC_EOF"]
        elif lang == "console":
            lines += [line[2:] for line in body.splitlines() if line.startswith("$ ")]
    return "\n".join(lines) + "\n"


def fresh_venv(path: Path) -> Path:
    """A new virtual environment that sees this one's packages (torch, gentool) underneath its own.

    Like ``--system-site-packages`` with the test environment as the system:
    a ``.pth`` file adds this environment's site-packages after the new one's,
    and ``bin/gentool`` is the console script pip writes for gentool.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    py = path / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    import site

    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "_gentool_test_parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parents), encoding="utf-8")
    script = path / "bin" / "gentool"
    script.write_text(f"#!{py}\nimport sys\nfrom gentool.cli import main\nsys.exit(main())\n", encoding="utf-8")
    script.chmod(0o755)
    return path


@pytest.mark.slow
def test_following_the_write_a_plugin_guide_word_for_word(tmp_path):
    venv = fresh_venv(tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    script = tutorial_script(DOC.read_text(encoding="utf-8"))
    assert "pip install -e ." in script and "gentool run example.toml" in script
    env = {**pip_env(editable=True), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200",
           "VIRTUAL_ENV": str(venv), "GENTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert re.search(r"gentool-example\W+0\.1\.0", out.stdout), out.stdout  # plain lines: stdout is a pipe
    assert "6 passed" in out.stdout
    assert (work / "gentool-example" / "runs" / "example" / "sample" / "grid.png").is_file()
    assert "Successfully uninstalled gentool-example-0.1.0" in out.stdout
