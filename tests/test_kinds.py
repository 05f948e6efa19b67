"""The table of kinds is the one place a kind is described: everything else follows from it."""

from __future__ import annotations

import inspect

import pytest

from gentool import docs, hookspecs, kinds, plugins, recipe, testing
from gentool.kinds import KINDS
from gentool.registry import Registry, RegistryError

HOOKSPECS = {name for name, fn in vars(hookspecs).items() if name.startswith("gentool_") and callable(fn)}


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_each_kind_has_its_hookspec_documented(kind):
    assert kind.hook == f"gentool_register_{kind.plural}"
    spec = getattr(hookspecs, kind.hook, None)
    assert spec is not None, f"gentool/hookspecs.py needs a hookspec {kind.hook}(register) for kind {kind.name!r}"
    assert list(inspect.signature(spec).parameters) == ["register"]
    assert ":param register:" in (inspect.getdoc(spec) or "")


def test_every_hookspec_belongs_to_a_kind():
    assert HOOKSPECS == {k.hook for k in KINDS}
    assert plugins.HOOKS == {k.name: k.hook for k in KINDS}


def test_the_registry_knows_every_kind_and_no_other():
    registry = Registry()
    for kind in KINDS:
        registry.add(kind.name, "x", lambda: None, "test")
        assert (kind.name, "x") in registry
    with pytest.raises(RegistryError, match="unknown component kind 'loss'"):
        registry.add("loss", "x", lambda: None, "test")


def test_recipe_tables_follow_from_the_kinds():
    tables = {k.table: k for k in KINDS if k.table}
    assert set(tables) <= set(recipe.SECTIONS) and set(recipe.SECTIONS) - set(tables) == {"run", "train", "eval"}
    assert recipe.COMPONENT_KIND == {table: k.name for table, k in tables.items()}
    assert not hasattr(recipe, "DEFAULT_NAMES")  # defaults are the plugins' to declare (tests/test_plugin_defaults.py)
    assert kinds.BY_TABLE["objective"].name == "objective" and kinds.BY_TABLE["tasks"].many


def test_docs_have_a_section_for_every_kind_with_recipe_options():
    assert set(docs.KIND_SECTIONS) == {k.name for k in KINDS if k.options}
    text = docs.recipe_reference(builtin_only=True)
    for kind in KINDS:
        if kind.options:
            assert f"## {kind.title}\n" in text, kind.name


def test_the_contract_checks_know_every_kind():
    assert testing.POSITIONAL == {k.name: k.positional for k in KINDS}
    assert testing.RESERVED == {"sampler": kinds.SAMPLER_RESERVED}
    checks = {name for name in testing.__all__ if name.startswith("check_")}
    for kind in KINDS:
        assert f"check_{kind.name}" in checks, f"gentool.testing needs check_{kind.name} for kind {kind.name!r}"


def test_kind_lookup_names_the_valid_kinds():
    assert kinds.kind("logger").positional == ("run_dir",)
    with pytest.raises(KeyError, match="kinds are data_source, autoencoder, schedule"):
        kinds.kind("loss")
