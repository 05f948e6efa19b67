"""The core (gentool/) does not name the built-in plugins' components; built-ins reach it only through the hooks.

A string literal in gentool/ (docstrings aside) equal to the name of a
built-in component is a place where the core would stop working if that
plugin were blocked or replaced. The few that remain are listed with the
reason they are there; a new one fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

from gentool.plugins import load_plugins, state

ROOT = Path(__file__).resolve().parents[1]

#: (file, name): why the core may say it
ALLOWED = {
    ("gentool/__init__.py", "console"): "gentool.progress's stderr console's attribute name in the plugin API table, "
                                        "not the console logger",
    ("gentool/kinds.py", "schedules"): "the schedule kind's plural (its hook's name), not the task",
    ("gentool/config.py", "jsonl"): "the default of [run] loggers",
    ("gentool/config.py", "inception-v3-compat"): "the default of [eval] feature_extractor",
    ("gentool/testing.py", "toy"): "testing.tiny_recipe builds a runnable recipe from the built-ins",
    ("gentool/testing.py", "linear"): "testing.tiny_recipe",
    ("gentool/testing.py", "unet"): "testing.tiny_recipe",
    ("gentool/testing.py", "class_embedding"): "testing.tiny_recipe",
    ("gentool/engine/export_diffusers.py", "linear"): "diffusers' beta_schedule name, not gentool's schedule",
    ("gentool/engine/export_diffusers.py", "sample"): "diffusers' prediction_type name, not gentool's task",
    ("gentool/config.py", "cosine"): "[train] lr_schedule's learning-rate decay, not the noise schedule",
    ("gentool/config.py", "linear"): "[train] lr_schedule's learning-rate decay, not the noise schedule",
    ("gentool/engine/optim.py", "cosine"): "the learning-rate decay of lr_at, not the noise schedule",
    ("gentool/engine/optim.py", "linear"): "the learning-rate decay of lr_at, not the noise schedule",
    **{(f, "identity"): "the Autoencoder protocol's attribute `identity` (pixel space), not the built-in autoencoder"
       for f in ("gentool/latent.py", "gentool/run.py", "gentool/testing.py")},
}


def builtin_names() -> dict[str, str]:
    load_plugins()
    st = state()
    builtin = {info.name for info in st.plugins if info.builtin}
    return {c.name: c.kind for c in st.registry.components() if c.kind != "command" and c.plugin in builtin}


def string_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_core_names_no_builtin_component():
    names = builtin_names()
    assert {"linear", "unet", "ancestral", "inpaint"} <= set(names)  # the scan knows the built-ins
    found = []
    for path in sorted((ROOT / "gentool").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found += [f"{rel}:{line}: {value!r} ({names[value]})" for line, value in string_literals(path)
                  if value in names and (rel, value) not in ALLOWED]
    assert not found, "the core names built-in components (reach them through the registry instead):\n" + "\n".join(found)


def test_the_scan_sees_a_literal(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Uses linear."""\nNAME = "linear"\n', encoding="utf-8")
    assert string_literals(module) == [(2, "linear")]
