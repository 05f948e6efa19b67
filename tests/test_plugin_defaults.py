"""The component a recipe gets without a table of its kind is declared by a plugin (register(..., default=True)).

The core names no default: the built-in plugins declare linear, ancestral
and ddpm; a second declaration for a kind breaks that plugin; without one, a
recipe must name the component.
"""

from __future__ import annotations

import types

import pytest
import torch

import gentool
from gentool.plugins import load_plugins
from gentool.recipe import RecipeError, load_recipe
from gentool.testing import tiny_recipe


def schedule_plugin(name: str, *, default: bool) -> types.ModuleType:
    module = types.ModuleType(f"plugin_{name}")

    def flat(*, timesteps: int = 10) -> torch.Tensor:
        """Constant betas."""
        return torch.full((timesteps,), 0.01, dtype=torch.float64)

    @gentool.hookimpl
    def gentool_register_schedules(register):
        register(name, flat, default=default)

    module.gentool_register_schedules = gentool_register_schedules
    return module


def without(table: str, tmp_path) -> dict:
    data = tiny_recipe(tmp_path)
    data.pop(table, None)
    return data


def test_the_builtins_declare_the_defaults(tmp_path):
    st = load_plugins(autoload=False, blocked=[])
    reg = st.registry
    assert (reg.default("schedule"), reg.default("sampler"), reg.default("objective")) == ("linear", "ancestral", "ddpm")
    assert reg.get("schedule", "linear").plugin == "schedules" and reg.default("denoiser") is None
    recipe = load_recipe(data=without("schedule", tmp_path), registry=reg)
    assert (recipe.schedule.name, recipe.sampler.name, recipe.objective.name) == ("linear", "ancestral", "ddpm")


def test_a_second_default_for_a_kind_breaks_that_plugin():
    st = load_plugins(autoload=False, blocked=[], extra=[("flatplugin", schedule_plugin("flat", default=True))])
    assert st.registry.default("schedule") == "linear"  # the built-ins load first
    assert "flat" not in st.registry.names("schedule")
    [broken] = [b for b in st.broken if b.name == "flatplugin"]
    assert "declared the default schedule, but plugin 'schedules' already declared 'linear'" in broken.error


def test_a_plugin_declares_the_default_when_no_builtin_does(tmp_path):
    st = load_plugins(autoload=False, blocked=["schedules"], extra=[("flatplugin", schedule_plugin("flat", default=True))])
    assert st.registry.default("schedule") == "flat" and not st.broken
    assert load_recipe(data=without("schedule", tmp_path), registry=st.registry).schedule.name == "flat"


def test_without_a_default_the_recipe_must_name_it(tmp_path):
    st = load_plugins(autoload=False, blocked=["schedules"], extra=[("flatplugin", schedule_plugin("flat", default=False))])
    assert st.registry.default("schedule") is None
    with pytest.raises(RecipeError, match=r"schedule\.name: missing: name the schedule to use"):
        load_recipe(data=without("schedule", tmp_path), registry=st.registry)
