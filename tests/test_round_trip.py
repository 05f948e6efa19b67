"""Every registered component's defaults survive the round trip of a run.

For each registered schedule, denoiser, conditioner, objective, sampler,
task, logger and data source: ``gentool run`` (the API behind it, one train
step) writes ``recipe.resolved.toml`` with every default filled in;
``gentool.load_run`` reads it back with the same options and samples (or
runs the task again); ``gentool export`` writes the weights and the recipe
as safetensors, which loads and samples the same images. Issue 24: the
Karras samplers' ``s_tmax = inf`` was written and then refused on reload.

Parametrised over the registry, so a newly registered component is tested
the moment it is registered, with its defaults. Where the defaults are too
big for a unit test, add small options to ``TINY`` (a function of the test's
folder where they need files) and to ``NEEDS`` what the rest of the recipe
must say for it; a data source that reads files gets a
writer in ``tests/_data_files.py``. A component with an option that has no
default and no entry here fails, naming this file.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

import pytest
import tomli_w
import torch
from typer.testing import CliRunner

import gentool
from _data_files import AUTOENCODER_FILES, DATA_FILES
from gentool.api import run_recipe
from gentool.cli import app
from gentool.kinds import BY_NAME, BY_TABLE, NAMES
from gentool.options import check_options, recipe_parameters
from gentool.recipe import Recipe, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

#: The kinds a recipe names and a run reads back (feature extractors: a name in [eval]; commands: no recipe).
KINDS = ("schedule", "process", "denoiser", "conditioner", "objective", "sampler", "task", "logger", "data_source",
         "autoencoder")
NOT_IN_A_RUN = ("feature_extractor", "command")

TINY_UNET = dict(in_channels=1, image_size=8, channels=32, channel_mult=[1], num_res_blocks=1,
                 attention_resolutions=[], dropout=0.0)
#: (kind, name) -> options replacing defaults too big for a unit test (the component's own table).
TINY: dict[tuple[str, str], dict | Callable[[Path], dict]] = {
    ("denoiser", "unet"): TINY_UNET,
    ("denoiser", "dit"): dict(in_channels=1, image_size=8, patch_size=2, depth=1, hidden_size=32, num_heads=2),
    ("task", "animate"): {"n": 2, "frames": 3},
    ("task", "guidance_sweep"): {"n": 2},
    ("task", "sample"): {"n": 4},
    # the distillations: a teacher of the same recipe trained one step (``distill_teacher``), few steps
    ("objective", "progressive"): lambda tmp: {
        "teacher": distill_teacher(tmp, None, {"name": "ddpm", "prediction": "v"}), "teacher_steps": 4, "rounds": 2},
    ("objective", "consistency"): lambda tmp: {
        "teacher": distill_teacher(tmp, {"name": "edm"}, {"name": "edm"}), "teacher_objective": {"name": "edm"},
        "n": 4},
    ("objective", "ect"): lambda tmp: {
        "teacher": distill_teacher(tmp, {"name": "edm"}, {"name": "edm"}), "teacher_objective": {"name": "edm"}},
    ("objective", "reflow"): lambda tmp: {
        "teacher": distill_teacher(tmp, {"name": "flow"}, {"name": "flow_matching"}),
        "teacher_objective": {"name": "flow_matching"}, "pair_steps": 2},
}
#: A recipe of the flow process (a continuous process takes no [schedule]; None removes a table).
FLOW = {"schedule": None, "process": {"name": "flow"}, "objective": {"name": "flow_matching"}}
#: (kind, name) -> what the rest of the recipe must say for it ({table: {key: value}}; None: no such table).
NEEDS: dict[tuple[str, str], dict] = {
    ("objective", "hybrid"): {"denoiser": {"learn_sigma": True}},  # a learned variance: 2C output channels
    ("process", "flow"): {"schedule": None, "objective": {"name": "flow_matching"}},
    ("process", "edm"): {"schedule": None, "objective": {"name": "edm"}},
    ("process", "ve"): {"schedule": None, "objective": {"name": "edm"}},
    ("objective", "flow_matching"): {"schedule": None, "process": {"name": "flow"}},
    ("objective", "edm"): {"schedule": None, "process": {"name": "edm"}},
    ("sampler", "midpoint"): FLOW,  # needs the process's derivatives(t): not the discrete chain
    ("objective", "consistency"): {"schedule": None, "process": {"name": "edm"}},
    ("objective", "ect"): {"schedule": None, "process": {"name": "edm"}},
    ("objective", "reflow"): {"schedule": None, "process": {"name": "flow"}},
    # the tiny autoencoders of tests/_data_files.py encode 1x8x8 images to 4x4x4 latents
    ("autoencoder", "kl"): {"denoiser": {"in_channels": 4, "image_size": 4}},
    ("autoencoder", "diffusers_kl"): {"denoiser": {"in_channels": 4, "image_size": 4}},
    # the consistency sampler samples a consistency model: the run it samples is a consistency distillation's
    ("sampler", "consistency"): {"schedule": None, "process": {"name": "edm"}, "objective": "consistency"},  # TINY's
}
#: Kinds whose runs are class-conditional (class_grid and guidance_sweep need labels).
CONDITIONAL = ("conditioner", "task")


def params() -> list:
    reg = gentool.registry()
    return [pytest.param(kind, name, id=f"{kind}:{name}") for kind in KINDS for name in reg.names(kind)]


def base_recipe(out: Path, conditional: bool) -> dict:
    """Toy data 1x8x8, linear T = 20, a one-level U-Net, one train step of 2 images."""
    recipe = {
        "run": {"name": "rt", "output_dir": out.as_posix(), "device": "cpu", "compile": False, "seed": 0},
        "data": {"name": "toy", "n": 16, "image_size": 8, "channels": 1, "num_classes": 2},
        "schedule": {"name": "linear", "timesteps": 20},
        "denoiser": {"name": "unet", **TINY_UNET, "class_cond": conditional},
        "train": {"steps": 1, "batch_size": 2, "checkpoint_every": 1},
    }
    if conditional:
        recipe["conditioner"] = {"name": "class_embedding", "num_classes": 2}
    return recipe


def distill_teacher(tmp: Path, process: dict | None, objective: dict) -> str:
    """A distillation's teacher: the base recipe with ``process`` (None: the chain) and ``objective``, one step."""
    recipe = base_recipe(tmp / "teacher", conditional=False)
    recipe["objective"] = objective
    if process is not None:
        recipe.pop("schedule")
        recipe["process"] = process
    path = tmp / "teacher.toml"
    path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
    run_recipe(path, run_tasks=False, progress=False, log=lambda message: None)
    return (tmp / "teacher" / "rt").as_posix()


def data_shape(name: str, options: dict) -> tuple[int, ...]:
    """``(N, C, H, W)`` of the data source's train split: its ``shape`` if it has one, else one image."""
    factory = gentool.registry().get("data_source", name).factory
    resolved = check_options(factory, options)
    shape = factory.shape("train", **resolved) if callable(getattr(factory, "shape", None)) else None
    if shape is None:
        data = factory("train", **resolved)
        shape = (len(data), *data[0][0].shape)
    return tuple(shape)


def recipe_for(kind: str, name: str, tmp: Path, monkeypatch) -> dict:
    """The base recipe with the component at its defaults (plus ``TINY``, ``NEEDS``, data files) in its place."""
    tiny = TINY.get((kind, name), {})
    options = dict(tiny(tmp) if callable(tiny) else tiny)
    if kind == "data_source" and name in DATA_FILES:
        options = {**DATA_FILES[name](tmp / "files", monkeypatch), **options}
    if kind == "autoencoder" and name in AUTOENCODER_FILES:
        options = {**AUTOENCODER_FILES[name](tmp / "files"), **options}
    factory = gentool.registry().get(kind, name).factory
    missing = [k for k, p in recipe_parameters(factory).items()
               if p.default is inspect.Parameter.empty and k not in options and k not in BY_NAME[kind].reserved + BY_NAME[kind].supplied]
    if missing:
        pytest.fail(f"{kind} {name!r} has options without defaults ({', '.join(missing)}): give it tiny options "
                    "in TINY of tests/test_round_trip.py (or a data writer in tests/_data_files.py)")
    recipe = base_recipe(tmp / "runs", conditional=kind in CONDITIONAL)
    for table, keys in NEEDS.get((kind, name), {}).items():
        if isinstance(keys, str):  # another component at its tiny options, e.g. the objective a sampler needs
            tiny_other = TINY.get((BY_TABLE[table].name, keys), {})
            keys = {"name": keys, **(tiny_other(tmp) if callable(tiny_other) else tiny_other)}
        if keys is None:
            recipe.pop(table, None)
        else:
            recipe[table] = {**recipe.get(table, {}), **keys}
    spec = {"name": name, **options}
    if kind == "task":
        recipe["tasks"] = [spec]
    elif kind == "logger":
        recipe["run"]["loggers"] = [spec]
    else:
        recipe[BY_NAME[kind].table] = spec
    if kind == "sampler":
        recipe["tasks"] = [{"name": "sample", "n": 2, "steps": 2}]  # the run's own task samples with it
    if kind == "data_source":  # the network takes the data's images
        n, channels, size = data_shape(name, options)[:3]
        recipe["denoiser"].update(in_channels=channels, image_size=size)
        recipe["train"]["batch_size"] = min(2, n)
    return recipe


def component(recipe: Recipe, kind: str) -> dict:
    """The component's table in a resolved recipe, as ``Recipe.dumps`` writes it."""
    tables = recipe.to_dict()
    if kind == "task":
        return tables["tasks"][0]
    if kind == "logger":
        return tables["run"]["loggers"][0]
    return tables[BY_NAME[kind].table]


def export(run_dir: Path, out: Path) -> Path:
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("kind, name", params())
def test_defaults_survive_run_reload_and_export(kind, name, tmp_path, monkeypatch):
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(recipe_for(kind, name, tmp_path, monkeypatch)), encoding="utf-8")
    want = component(load_recipe(path), kind)
    result = run_recipe(path, progress=False, log=lambda message: None)  # gentool run: train, then the tasks
    run_dir = result.run.run_dir
    assert (run_dir / "recipe.resolved.toml").is_file() and result.run.step == 1

    loaded = gentool.load_run(run_dir, device="cpu")
    assert component(loaded.recipe, kind) == want
    exported = gentool.load_run(export(run_dir, tmp_path / "rt.safetensors"), device="cpu")
    assert component(exported.recipe, kind) == want
    if kind == "task":
        assert [n for n, _ in result.tasks] == [name]
        again = loaded.run_task(loaded.recipe.tasks[0], tmp_path / "again")
        assert again.files or again.metrics
        assert all(Path(f).is_file() for f in again.files)
        return
    x = loaded.sample(2, steps=2, generator=loaded.generator(0))
    assert x.shape == (2, *loaded.image_shape) and torch.isfinite(x).all()
    # the export holds the EMA weights the run directory's sample used: the same images
    torch.testing.assert_close(exported.sample(2, steps=2, generator=exported.generator(0)), x, rtol=0, atol=0)


def test_every_kind_a_run_holds_is_tested():
    assert set(KINDS) | set(NOT_IN_A_RUN) == set(NAMES), f"a new kind: add it to KINDS ({set(NAMES) - set(KINDS)})"


def test_the_tables_name_registered_components():
    reg = gentool.registry()
    stale = [key for key in [*TINY, *NEEDS] if key[1] not in reg.names(key[0])]
    stale += [("data_source", n) for n in DATA_FILES if n not in reg.names("data_source")]
    stale += [("autoencoder", n) for n in AUTOENCODER_FILES if n not in reg.names("autoencoder")]
    assert not stale, f"tiny options for components that are no longer registered: {stale}"
