"""The layers of docs/architecture.md hold: `lint-imports` passes, catches an upward import, and no module cycle exists.

The contracts live in pyproject.toml (``[tool.importlinter]``): a ``layers``
contract over gentool's modules and an ``independence`` contract over the
built-in plugin packages. import-linter reads every import, inside functions
too; only ``if TYPE_CHECKING:`` imports (annotations) are left out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(*args: str, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_lint_imports_passes_on_the_package():
    result = lint_imports(cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    """On a copy of the package: one import at module level and one inside a function, both upward."""
    shutil.copytree(ROOT / "gentool", tmp_path / "gentool", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "gentool" / "diffusion.py", "a", encoding="utf-8") as f:
        f.write("\nfrom gentool import run  # upward: the maths imports the run builder\n")
    with open(tmp_path / "gentool" / "model.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _upward():\n    from gentool.engine import train  # upward, inside a function\n\n    return train\n")
    layers = next(c for c in CONFIG["contracts"] if c["type"] == "layers")
    config = tmp_path / "contracts.toml"
    config.write_text("\n".join([
        "[tool.importlinter]",
        'root_packages = ["gentool"]',
        "exclude_type_checking_imports = true",
        "[[tool.importlinter.contracts]]",
        'name = "layers"',
        'type = "layers"',
        'containers = ["gentool"]',
        f"exhaustive = {str(layers.get('exhaustive', False)).lower()}",
        f"exhaustive_ignores = {layers.get('exhaustive_ignores', [])!r}".replace("'", '"'),
        f"layers = {layers['layers']!r}".replace("'", '"'),
        f"ignore_imports = {layers.get('ignore_imports', [])!r}".replace("'", '"'),
    ]), encoding="utf-8")
    result = lint_imports(str(config), cwd=tmp_path, pythonpath=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gentool.diffusion is not allowed to import gentool.run" in result.stdout
    assert "gentool.model is not allowed to import gentool.engine" in result.stdout


def test_the_contracts_cover_every_module_and_every_builtin_plugin():
    layers = next(c for c in CONFIG["contracts"] if c["type"] == "layers")
    assert layers["exhaustive"], "every module of gentool must be in a layer (exhaustive = true)"
    plugins = sorted(p.name for p in (ROOT / "plugins").glob("gentool_*") if (p / "__init__.py").is_file())
    independent = next(c for c in CONFIG["contracts"] if c["type"] == "independence")["modules"]
    api = next(c for c in CONFIG["contracts"] if c.get("id") == "plugin-api")["source_modules"]
    missing = [p for p in plugins if p not in independent or p not in CONFIG["root_packages"] or p not in api]
    assert not missing, (f"add {missing} to root_packages, the independence contract and the plugin-api contract "
                         "in pyproject.toml")


def module_cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), ignoring imports of the package itself."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {m: [d for d in graph.find_modules_directly_imported_by(m) if d.startswith(package + ".")]
             for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return cycles


def test_no_import_cycle_among_the_modules():
    graph = grimp.build_graph("gentool", cache_dir=None, exclude_type_checking_imports=True)
    assert module_cycles(graph, "gentool") == []


def test_no_import_cycle_even_through_type_annotations():
    """Issue 23: interfaces -> run -> sampling -> interfaces was a cycle through ``if TYPE_CHECKING:`` imports;
    a protocol for what a task needs of a run (``RunLike``) ended it, and none may come back."""
    graph = grimp.build_graph("gentool", cache_dir=None, exclude_type_checking_imports=False)
    assert module_cycles(graph, "gentool") == []


def test_a_plugin_importing_a_core_module_breaks_the_plugin_api_contract(tmp_path):
    """The built-in plugins import gentool's top-level names only: a submodule import, even in a function, fails."""
    shutil.copytree(ROOT / "gentool", tmp_path / "gentool", ignore=shutil.ignore_patterns("__pycache__"))
    plugin = tmp_path / "gentool_probe"
    plugin.mkdir()
    (plugin / "__init__.py").write_text("from gentool import Denoised, coefficients  # the API: allowed\n"
                                        "\n\ndef f():\n    from gentool.reverse import posterior\n\n    return posterior\n")
    api = next(c for c in CONFIG["contracts"] if c.get("id") == "plugin-api")
    config = tmp_path / "contracts.toml"
    config.write_text("\n".join([
        "[tool.importlinter]",
        'root_packages = ["gentool", "gentool_probe"]',
        "[[tool.importlinter.contracts]]",
        'name = "plugin api"',
        f'type = "{api["type"]}"',
        'source_modules = ["gentool_probe"]',
        f"forbidden_modules = {api['forbidden_modules']!r}".replace("'", '"'),
        f"allow_indirect_imports = {str(api['allow_indirect_imports']).lower()}",
    ]), encoding="utf-8")
    result = lint_imports(str(config), cwd=tmp_path, pythonpath=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gentool_probe is not allowed to import gentool.reverse" in result.stdout
    assert "gentool.parameterisation" not in result.stdout and "gentool.process" not in result.stdout


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyclic import c\n")
    (pkg / "c.py").write_text("import cyclic.a\n")
    (pkg / "d.py").write_text("import cyclic.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic", cache_dir=None)
    assert module_cycles(graph, "cyclic") == [["cyclic.a", "cyclic.b", "cyclic.c"]]


def test_the_architecture_page_draws_the_contract_s_layers():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawing = text[text.index("## Layers"):]
    layers = next(c for c in CONFIG["contracts"] if c["type"] == "layers")["layers"]
    missing = [layer for layer in layers if f"  {layer}" not in drawing]
    assert not missing, f"the layers drawn in docs/architecture.md should include {missing} (as in pyproject.toml)"
