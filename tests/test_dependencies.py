"""Every third-party module that gentool or a built-in plugin imports at module level is a declared dependency.

A plain ``pip install -e .`` (the README's first command) installs only ``[project] dependencies``;
the test extras bring more (import-linter brings click, for one), so an undeclared import passes the
suite and fails for a new user. Imports inside functions are optional features with their extras.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in project["dependencies"]}


def module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:  # module level only (try/except blocks at module level included)
        for sub in ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node]:
            if isinstance(sub, ast.Import):
                names |= {a.name.split(".")[0] for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module:
                names.add(sub.module.split(".")[0])
    return names


def third_party(names: set[str]) -> set[str]:
    own = {"gentool"} | {p.name for p in (ROOT / "plugins").iterdir() if p.name.startswith("gentool_")}
    return {n for n in names if n not in sys.stdlib_module_names and n not in own and n != "__future__"}


def test_module_level_imports_are_declared_dependencies():
    dists = packages_distributions()
    deps = declared()
    missing = []
    builtin = [p for p in (ROOT / "plugins").glob("gentool_*/**/*.py")]  # not plugins/examples: its own package
    for path in sorted([*(ROOT / "gentool").rglob("*.py"), *builtin]):
        for module in sorted(third_party(module_level_imports(path))):
            names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
            if not names & deps:
                missing.append(f"{path.relative_to(ROOT)}: {module} (distribution {sorted(names)})")
    assert not missing, "imported at module level but not in [project] dependencies:\n" + "\n".join(missing)


def test_the_check_sees_an_undeclared_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\nimport click\ntry:\n    import yaml\nexcept ImportError:\n    pass\n"
                      "def f():\n    import diffusers\n", encoding="utf-8")
    assert third_party(module_level_imports(source)) == {"click", "yaml"}
