"""Plugin control: autoload switch, blocking, duplicates, broken plugins, and every hook.

Throwaway third-party packages are written into a temporary folder as an
importable module plus a ``*.dist-info`` with ``METADATA`` and
``entry_points.txt``, exactly what pip installs, and that folder is put on
``sys.path`` (or ``PYTHONPATH`` for the one subprocess test).
"""

from __future__ import annotations

import math

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import gentool
from gentool import plugins
from gentool.cli import app
from gentool.plugins import HOOKS, load_plugins
from gentool.registry import RegistryError
from gentool.recipe import load_recipe
from gentool.run import build
from gentool.testing import tiny_recipe

SCHEDULE = '''
import torch
import gentool


def flat(*, timesteps: int = 10) -> torch.Tensor:
    """Constant betas.

    Args:
        timesteps: number of steps.
    """
    return torch.full((timesteps,), 0.1, dtype=torch.float64)


@gentool.hookimpl
def gentool_register_schedules(register):
    for name in {names!r}:
        register(name, flat)
'''


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    monkeypatch.delenv("GENTOOL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("GENTOOL_BLOCK_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """``add(dist, module_source, ep_name=...)`` installs a throwaway plugin package on sys.path."""
    root = tmp_path / "site"
    root.mkdir()
    made: list[str] = []

    def add(dist: str, source: str, *, ep_name: str | None = None, version: str = "1.2.3", module: str | None = None) -> str:
        module = module or f"{dist.replace('-', '_')}_{tmp_path.name[-8:].replace('-', '_')}"
        (root / f"{module}.py").write_text(source, encoding="utf-8")
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
        (info / "entry_points.txt").write_text(f"[gentool]\n{ep_name or dist} = {module}\n", encoding="utf-8")
        made.append(module)
        return module

    monkeypatch.syspath_prepend(str(root))
    add.root = root
    yield add
    for module in made:
        sys.modules.pop(module, None)


def schedule_plugin(*names: str) -> str:
    return SCHEDULE.format(names=list(names))


def broken_names(state) -> dict[str, str]:
    return {b.name: b.error for b in state.broken}


# -- discovery, autoload switch, blocking ---------------------------------------------

def test_third_party_plugin_is_loaded_with_its_package_and_version(site):
    site("gentool-flat", schedule_plugin("flat"), ep_name="flat")
    st = load_plugins()
    info = {p.name: p for p in st.plugins}["flat"]
    assert (info.package, info.version, info.builtin) == ("gentool-flat", "1.2.3", False)
    assert info.hooks == ["gentool_register_schedules"]
    assert st.registry.get("schedule", "flat").plugin == "flat"
    assert not st.broken


@pytest.mark.parametrize("value, loaded", [("1", False), ("true", False), ("YES", False), ("0", True), ("", True)])
def test_disable_plugin_autoload_keeps_only_builtins(site, monkeypatch, value, loaded):
    site("gentool-flat", schedule_plugin("flat"), ep_name="flat")
    monkeypatch.setenv("GENTOOL_DISABLE_PLUGIN_AUTOLOAD", value)
    st = load_plugins()
    assert (("schedule", "flat") in st.registry) is loaded
    assert ("schedule", "linear") in st.registry  # built-ins always load
    assert all(p.builtin for p in st.plugins) is not loaded


@pytest.mark.parametrize("blocked", ["flat", "gentool-flat", " other , flat "])
def test_block_plugins_by_entry_point_or_package_name(site, monkeypatch, blocked):
    site("gentool-flat", schedule_plugin("flat"), ep_name="flat")
    monkeypatch.setenv("GENTOOL_BLOCK_PLUGINS", blocked)
    st = load_plugins()
    assert ("schedule", "flat") not in st.registry
    assert "flat" not in {p.name for p in st.plugins}
    assert not st.broken
    result = CliRunner().invoke(app, ["list-plugins"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "blocked:" in result.output


def test_list_plugins_summaries_show_single_backticks():
    # docstrings are reStructuredText (``beta_start``); the table and the JSON show `beta_start`
    runner = CliRunner()
    rows = json.loads(runner.invoke(app, ["list-plugins", "--json"]).output)
    linear = next(r for r in rows if (r["kind"], r["name"]) == ("schedule", "linear"))
    assert linear["summary"].startswith("Linear betas from `beta_start` to `beta_end`")
    assert not [r["summary"] for r in rows if "``" in r.get("summary", "")]
    table = runner.invoke(app, ["list-plugins"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "`beta_start`" in table.output and "``" not in table.output


def test_a_blocked_builtin_is_not_loaded():
    st = load_plugins(blocked=["schedules"])
    assert not st.registry.names("schedule")
    assert ("sampler", "ancestral") in st.registry


# -- duplicates -----------------------------------------------------------------------

def test_duplicate_of_a_builtin_names_both_packages_and_the_builtin_wins(site):
    site("gentool-clash", schedule_plugin("quadratic_x", "linear"), ep_name="clash")
    st = load_plugins()
    error = broken_names(st)["clash"]
    assert "'linear'" in error
    assert "gentool-clash" in error and "gentool 0.1" in error
    assert "'schedules'" in error and "'clash'" in error
    assert "GENTOOL_BLOCK_PLUGINS" in error
    # the built-in plugin keeps all its schedules; the clashing plugin registers nothing
    assert {st.registry.get("schedule", n).plugin for n in ("linear", "cosine", "sigmoid")} == {"schedules"}
    assert ("schedule", "quadratic_x") not in st.registry
    assert "clash" not in {p.name for p in st.plugins}


def test_duplicate_between_two_packages_names_both(site):
    site("gentool-aaa", schedule_plugin("shared"), ep_name="aaa")
    site("gentool-zzz", schedule_plugin("shared"), ep_name="zzz")
    st = load_plugins()
    assert st.registry.get("schedule", "shared").plugin == "aaa"  # by plugin name: stable, whatever the path order
    error = broken_names(st)["zzz"]
    assert "gentool-aaa 1.2.3" in error and "gentool-zzz 1.2.3" in error


def test_same_entry_point_name_in_two_packages_is_reported(site):
    site("gentool-one", schedule_plugin("one"), ep_name="same", module="gentool_one_mod")
    site("gentool-two", schedule_plugin("two"), ep_name="same", module="gentool_two_mod")
    st = load_plugins()
    assert len(st.broken) == 1, st.broken
    error = st.broken[0].error
    assert "'same'" in error and "gentool-one" in error and "gentool-two" in error
    assert len([p for p in st.plugins if p.name == "same"]) == 1


# -- broken plugins ---------------------------------------------------------------------

def test_plugin_raising_on_import_is_broken_and_list_plugins_exits_0(site):
    site("gentool-bad", "raise ImportError('needs libfoo 2')\n", ep_name="bad")
    site("gentool-flat", schedule_plugin("flat"), ep_name="flat")
    st = load_plugins()
    assert broken_names(st) == {"bad": "ImportError: needs libfoo 2"}
    assert ("schedule", "flat") in st.registry
    plugins.reset(st)
    runner = CliRunner()
    table = runner.invoke(app, ["list-plugins"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "BROKEN" in table.output and "needs libfoo 2" in table.output and "gentool-bad" in table.output
    verbose = runner.invoke(app, ["list-plugins", "--verbose"], env={"COLUMNS": "200"})
    assert verbose.exit_code == 0 and "Traceback" in verbose.output
    rows = json.loads(runner.invoke(app, ["list-plugins", "--json"]).output)
    bad = [r for r in rows if r["kind"] == "broken"]
    assert bad == [{"kind": "broken", "name": "bad", "plugin": "bad", "package": "gentool-bad",
                    "version": "1.2.3", "error": "ImportError: needs libfoo 2"}]


def test_an_unknown_name_points_at_the_plugins_that_failed_to_load(site):
    """The user asked for 'quadratic'; its plugin failed to import, so say so rather than only 'unknown'."""
    site("gentool-bad", "raise ImportError('needs libfoo 2')\n", ep_name="bad")
    st = load_plugins()
    with pytest.raises(RegistryError, match=r"unknown schedule 'quadratic'.*plugin\(s\) failed to load and registered "
                                            r"nothing: bad \(ImportError: needs libfoo 2\).*list-plugins --verbose"):
        st.registry.get("schedule", "quadratic")


def test_plugin_raising_while_registering_registers_nothing(site):
    source = schedule_plugin("early") + "\n\n@gentool.hookimpl\ndef gentool_register_samplers(register):\n    raise RuntimeError('boom')\n"
    site("gentool-half", source, ep_name="half")
    st = load_plugins()
    assert broken_names(st) == {"half": "RuntimeError: boom"}
    assert ("schedule", "early") not in st.registry
    assert "half" not in {p.name for p in st.plugins}


def test_misspelt_hook_is_reported(site):
    source = schedule_plugin("fine").replace("def gentool_register_schedules", "def gentool_register_schedule")
    site("gentool-typo", source, ep_name="typo")
    site("gentool-flat", schedule_plugin("flat"), ep_name="flat")
    st = load_plugins()
    error = broken_names(st)["typo"]
    assert "unknown hook 'gentool_register_schedule'" in error
    assert error.endswith("; did you mean 'gentool_register_schedules'?")
    assert "typo" not in {p.name for p in st.plugins}
    assert ("schedule", "flat") in st.registry


@pytest.mark.parametrize("typo, hook", [("gentool_register_dataset", "gentool_register_data_sources"),
                                        ("register_samplers", "gentool_register_samplers"),
                                        ("gentool_register_models", None)])
def test_closest_hook(typo, hook):
    assert plugins.closest_hook(typo) == hook


def test_cli_in_a_fresh_process_with_blocked_and_broken_plugins(site):
    """The environment variables are read by a real ``gentool`` process."""
    site("gentool-bad", "import no_such_module_xyz\n", ep_name="bad")
    site("gentool-flat", schedule_plugin("flat"), ep_name="flat")
    site("gentool-blocked", schedule_plugin("blocked_one"), ep_name="blockme")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site.root), os.environ.get("PYTHONPATH", "")]),
           "GENTOOL_BLOCK_PLUGINS": "blockme", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "gentool", "list-plugins", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    names = {(r["kind"], r["name"]) for r in rows}
    assert ("schedule", "flat") in names and ("schedule", "blocked_one") not in names
    assert [r["error"] for r in rows if r["kind"] == "broken"] == ["ModuleNotFoundError: No module named 'no_such_module_xyz'"]


# -- every hook is honoured by the core (tests/test_docs.py requires one test per hook) ---------

def probe(hook: str, name: str, factory) -> types.ModuleType:
    """An in-code plugin implementing only ``hook``, registering ``factory`` as ``name``."""
    module = types.ModuleType(f"probe_{hook}")

    def impl(register):
        register(name, factory)

    impl.__name__ = hook
    setattr(module, hook, gentool.hookimpl(impl))
    return module


def probe_state(hook: str, name: str, factory):
    st = load_plugins(autoload=False, blocked=[], extra=[("probe", probe(hook, name, factory))])
    assert not st.broken, st.broken
    assert {p.name: p.hooks for p in st.plugins}["probe"] == [hook]
    return st


def build_tiny(st, tmp_path, **tables):
    """The tiny recipe with ``tables`` replaced (``None``: the table removed), built with ``st``'s registry."""
    data = tiny_recipe(tmp_path)
    for key, table in tables.items():
        if table is None:
            data.pop(key, None)
        else:
            data[key] = table
    return build(load_recipe(data=data, registry=st.registry), registry=st.registry, device="cpu")


def test_hook_gentool_register_schedules(tmp_path):
    def flat(*, timesteps: int = 5) -> torch.Tensor:
        """Constant betas 0.1.

        Args:
            timesteps: T.
        """
        return torch.full((timesteps,), 0.1, dtype=torch.float64)

    st = probe_state("gentool_register_schedules", "flat", flat)
    run = build_tiny(st, tmp_path, schedule={"name": "flat", "timesteps": 7})
    assert run.diffusion.num_timesteps == 7
    torch.testing.assert_close(run.diffusion.alphas_cumprod_64, 0.9 ** torch.arange(1, 8, dtype=torch.float64))


def test_hook_gentool_register_processes(tmp_path):
    class Cosine(gentool.ContinuousProcess):
        """alpha = cos(pi t / 2), sigma = sin(pi t / 2) on t in [0, 1] (a continuous VP process)."""

        def alpha_of(self, t):
            return torch.cos(math.pi / 2 * t)

        def sigma_of(self, t):
            return torch.sin(math.pi / 2 * t)

    def cosine_vp(*, t_max: float = 0.99) -> Cosine:
        """The continuous cosine process.

        Args:
            t_max: where sampling starts.
        """
        process = Cosine()
        process.t_max = t_max
        return process

    st = probe_state("gentool_register_processes", "cosine_vp", cosine_vp)
    run = build_tiny(st, tmp_path, process={"name": "cosine_vp", "t_max": 0.98}, schedule=None,
                     objective={"prediction": "v"})
    assert isinstance(run.process, Cosine) and run.process.t_max == 0.98 and run.recipe.schedule is None
    seen = []
    x = run.sample(2, steps=4, progress=False, callback=lambda info: seen.append(info["t"]))
    assert seen[0] == pytest.approx(0.98) and x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


class Shift(torch.nn.Module):
    prediction, cond_dim = "eps", None

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, x_t, t, cond=None):
        return torch.zeros_like(x_t) + self.value


def test_hook_gentool_register_denoisers(tmp_path):
    def shift(*, value: float = 0.0) -> Shift:
        """Predicts a constant.

        Args:
            value: the constant.
        """
        return Shift(value)

    st = probe_state("gentool_register_denoisers", "shift", shift)
    data = tiny_recipe(tmp_path, conditional=False)
    data["denoiser"] = {"name": "shift", "value": 0.5}
    run = build(load_recipe(data=data, registry=st.registry), registry=st.registry, device="cpu")
    assert isinstance(run.model.denoiser, Shift) and float(run.model.denoiser.value.detach()) == 0.5
    assert run.sample(2, progress=False).shape == (2, 1, 8, 8)


def test_hook_gentool_register_conditioners(tmp_path):
    seen = {}

    class Zero(torch.nn.Module):
        num_classes = 3

        def forward(self, labels):
            return torch.zeros(labels.shape[0], seen["dim"])

    def zero(dim: int, *, scale: float = 1.0) -> Zero:
        """A zero embedding.

        Args:
            scale: unused.
        """
        seen["dim"] = dim
        return Zero()

    st = probe_state("gentool_register_conditioners", "zero", zero)
    run = build_tiny(st, tmp_path, conditioner={"name": "zero"})
    assert seen["dim"] == run.model.denoiser.cond_dim == 4 * 32
    assert run.num_classes == 3


def test_hook_gentool_register_samplers(tmp_path):
    calls = []

    def constant(eps_fn, diffusion, x_T, *, steps=None, t_start=None, generator=None, callback=None, value: float = 0.0):
        """Returns a constant image.

        Args:
            value: the constant.
        """
        calls.append(steps)
        return torch.full_like(x_T, value)

    st = probe_state("gentool_register_samplers", "constant", constant)
    run = build_tiny(st, tmp_path, sampler={"name": "constant", "value": 0.25, "steps": 3})
    x = run.sample(2, progress=False)
    assert calls == [3] and bool((x == 0.25).all())


def test_hook_gentool_register_tasks(tmp_path):
    def note(run, out_dir: Path, *, text: str = "hi") -> gentool.TaskResult:
        """Writes a note.

        Args:
            text: what to write.
        """
        path = out_dir / "note.txt"
        path.write_text(f"{text} {run.diffusion.num_timesteps}")
        return gentool.TaskResult(files=[path], metrics={"T": run.diffusion.num_timesteps})

    st = probe_state("gentool_register_tasks", "note", note)
    data = tiny_recipe(tmp_path)
    data["tasks"] = [{"name": "note", "text": "T ="}]
    recipe = load_recipe(data=data, registry=st.registry)
    result = build(recipe, registry=st.registry, device="cpu").run_task(recipe.tasks[0])
    assert result.files[0].read_text() == "T = 20" and result.metrics == {"T": 20}


def test_hook_gentool_register_data_sources(tmp_path):
    def ones(split: str, *, n: int = 3) -> list:
        """All-ones images.

        Args:
            n: number of images.
        """
        return [(torch.ones(1, 8, 8), 0 if split == "train" else 1)] * n

    st = probe_state("gentool_register_data_sources", "ones", ones)
    run = build_tiny(st, tmp_path, data={"name": "ones", "n": 5})
    assert len(run.dataset("train")) == 5 and run.dataset("test")[0][1] == 1


def test_hook_gentool_register_autoencoders(tmp_path):
    calls = []

    class Pool(torch.nn.Module):
        """2x2 average pooling and nearest-neighbour upsampling, with a fixed scale factor."""

        fingerprint, scale_factor = "pool", 2.0

        def encode(self, x):
            calls.append("encode")
            return torch.nn.functional.avg_pool2d(x, 2)

        def decode(self, z):
            calls.append("decode")
            return torch.nn.functional.interpolate(z, scale_factor=2.0)

        def latent_shape(self, image_shape):
            return (image_shape[0], image_shape[1] // 2, image_shape[2] // 2)

        def image_shape(self, latent_shape):
            return (latent_shape[0], 2 * latent_shape[1], 2 * latent_shape[2])

    def pool(*, size: int = 2) -> Pool:
        """Average pooling.

        Args:
            size: the pooling size (2).
        """
        return Pool()

    st = probe_state("gentool_register_autoencoders", "pool", pool)
    data = tiny_recipe(tmp_path, conditional=False)
    data["autoencoder"] = {"name": "pool"}
    data["denoiser"].update(image_size=4, channel_mult=[1], attention_resolutions=[])
    run = build(load_recipe(data=data, registry=st.registry), registry=st.registry, device="cpu")
    assert run.latent and run.latent_shape == (1, 4, 4) and run.image_shape == (1, 8, 8)
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(run.encode(x), 2.0 * torch.nn.functional.avg_pool2d(x, 2))  # s E(x), s = 2
    calls.clear()
    out = run.sample(2, steps=3, progress=False)
    assert out.shape == (2, 1, 8, 8) and calls == ["decode"]  # sampled in latent space, decoded once


def test_hook_gentool_register_feature_extractors():
    def fx(*, width: int = 4):
        """A feature extractor.

        Args:
            width: feature width.
        """
        return width

    st = probe_state("gentool_register_feature_extractors", "probe_fx", fx)
    component = st.registry.get("feature_extractor", "probe_fx")
    assert component.factory is fx and component.plugin == "probe"


def test_every_hook_has_a_kind():
    from gentool import hookspecs

    specs = {n for n in dir(hookspecs) if n.startswith("gentool_")}
    assert specs == set(HOOKS.values())
