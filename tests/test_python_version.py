"""gentool needs Python 3.11 (tomllib is imported unconditionally); the package metadata says so consistently."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_requires_python_is_the_first_version_with_tomllib():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">=3.11"
    versions = sorted(tuple(map(int, c.rsplit(":: ", 1)[1].split("."))) for c in project["classifiers"]
                      if re.search(r":: 3\.\d+$", c))
    assert versions[0] == (3, 11)
    assert not any(d.startswith("tomli>") or d.startswith("tomli ") for d in project["dependencies"])


def test_no_module_keeps_a_python_3_10_fallback():
    files = [*ROOT.joinpath("gentool").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]
    fallbacks = [str(f.relative_to(ROOT)) for f in files if re.search(r"import tomli as tomllib|version_info < \(3, 11\)|version_info >= \(3, 11\)", f.read_text(encoding="utf-8"))]
    assert not fallbacks, f"Python 3.10 fallbacks left in {fallbacks}; gentool requires 3.11"
