"""No code runs from any weights file, built-in plugins are never replaced, a run stays in its output_dir.

Every malicious file here is a real pickle whose unpickling would create a
marker file (``os.system``-free: ``pathlib.Path.touch``); each test asserts the
marker was NOT created, so it fails if anything ever unpickles the payload.
"""

from __future__ import annotations

import pathlib
import sys

import pytest
import torch
from typer.testing import CliRunner

import gentool
from gentool import plugins
from gentool.cli import app
from gentool.engine import checkpoint as ckpt
from gentool.errors import GentoolError
from gentool.evaluation.features import build_extractor
from gentool.evaluation.weights import WeightsFileError, read_state_dict, safe_torch_load
from gentool.plugins import load_plugins
from gentool.recipe import RecipeError

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


class Payload:
    """Unpickling this touches ``marker``: the proof that code ran."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def malicious(path: pathlib.Path, marker: pathlib.Path, **extra) -> pathlib.Path:
    """A torch.save file of a 'state dict' carrying the payload (as a weights_only=False load would run it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fc.weight": torch.zeros(2, 2), "evil": Payload(marker), **extra}, path)
    return path


def test_the_payload_is_real(tmp_path):
    """The harness itself: an unsafe load does run the payload (so 'no marker' below means something)."""
    marker = tmp_path / "ran"
    torch.load(malicious(tmp_path / "w.pth", marker), weights_only=False)
    assert marker.exists()


def test_torch_hubs_cached_inception_file_is_never_unpickled(tmp_path, monkeypatch):
    """torch-fidelity loads the hub cache with weights_only=False; inside gentool it is weights_only=True."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "ran"
    malicious(pathlib.Path(torch.hub.get_dir()) / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth", marker)
    with pytest.raises(GentoolError, match="refused"):
        build_extractor(plugins.registry(), "inception-v3-compat")
    assert not marker.exists()



def test_torch_hubs_cached_repository_code_never_runs(trained_toy, tmp_path, monkeypatch):
    """dinov2-* is torch.hub.load: it would import $TORCH_HOME/hub/<repo>/hubconf.py; gentool refuses in one line."""
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "ran"
    repo = pathlib.Path(torch.hub.get_dir()) / "facebookresearch_dinov2_main"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
                                     "def dinov2_vits14(**kwargs):\n    raise SystemExit('hub code ran')\n")

    def offline(*args, **kwargs):  # as without internet: torch hub falls back to its cache
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(GentoolError, match="'dinov2-vit-s-14': it needs torch hub to import and run"):
        build_extractor(plugins.registry(), "dinov2-vit-s-14")
    assert not marker.exists()
    result = runner.invoke(app, ["eval", str(trained_toy.run_dir), "--metrics", "fid", "--n", "10",
                                 "--feature-extractor", "dinov2-vit-s-14", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "never runs code from a download or a cache" in " ".join(result.output.split()), result.output
    assert not marker.exists()
    assert torch.hub.load.__module__ == "torch.hub"  # restored


@pytest.mark.parametrize("damage", ["pickle", "truncated", "garbage"])
def test_a_hostile_or_damaged_cnn28_cache_file_is_one_line(trained_toy, tmp_path, monkeypatch, damage):
    """The file `gentool features train` caches, planted or damaged: eval refuses it in one line, never unpickles it."""
    from gentool_metrics import default_weights_path

    monkeypatch.setenv("GENTOOL_CACHE_DIR", str(tmp_path / "cache"))
    marker, path = tmp_path / "ran", default_weights_path(trained_toy.recipe.data.name)
    malicious(path, marker)
    if damage == "truncated":  # a real safetensors file cut short
        from safetensors.torch import save_file

        save_file({"net.0.weight": torch.zeros(32, 1, 3, 3)}, str(path))
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"\xff" * 64)
    result = runner.invoke(app, ["eval", str(trained_toy.run_dir), "--metrics", "fid", "--n", "10",
                                 "--feature-extractor", "gentool-cnn28", "--out", str(tmp_path / "r.json")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output and text.count("error:") == 1, result.output
    assert f"{path}: not a gentool-cnn28 weights file" in text and "gentool features train" in text, text
    assert not marker.exists() and not (tmp_path / "r.json").exists()

def test_feature_weights_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    weights = malicious(tmp_path / "inception.pth", marker)
    with pytest.raises(WeightsFileError, match="refused"):
        build_extractor(plugins.registry(), "inception-v3-compat", weights)
    assert not marker.exists()


def test_torch_fidelity_extractors_load_weights_only_too(tmp_path):
    """vgg16 (torch-fidelity's own, not registered by gentool) reads --feature-weights with weights_only=False itself."""
    marker = tmp_path / "ran"
    with pytest.raises(GentoolError):
        build_extractor(plugins.registry(), "vgg16", malicious(tmp_path / "vgg.pth", marker))
    assert not marker.exists()


def test_the_weights_checked_are_the_weights_used(tmp_path, monkeypatch):
    """--feature-weights is read once: torch-fidelity gets the state dict gentool checked, never the file again."""
    import plugins_inception as inception  # noqa: F401 - see the fixture below

    path = tmp_path / "inception.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, path)
    reads = []
    original = torch.load

    def spy(f, *args, **kwargs):
        reads.append(str(f))
        return original(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(WeightsFileError, match="not usable as Inception-v3 weights"):  # keys missing: a toy file
        inception.inception_v3(weights_path=str(path))
    assert reads == [str(path)]


@pytest.fixture(autouse=True)
def plugins_inception(monkeypatch):
    """The built-in metrics plugin's inception module, importable as ``plugins_inception``."""
    from gentool_metrics import inception

    monkeypatch.setitem(sys.modules, "plugins_inception", inception)


def test_a_preloaded_file_is_served_from_memory(tmp_path):
    """A file swapped for a malicious one after the check is never read inside safe_torch_load."""
    marker = tmp_path / "ran"
    path = malicious(tmp_path / "swapped.pth", marker)
    with safe_torch_load({path: {"fc.weight": torch.ones(1)}}):
        state = torch.load(path, weights_only=False)  # what torch-fidelity does
    assert torch.equal(state["fc.weight"], torch.ones(1)) and not marker.exists()
    with safe_torch_load(), pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=False)
    assert not marker.exists()
    assert torch.load is not None and "safe" not in getattr(torch.load, "__qualname__", "")  # restored


def test_read_state_dict_refuses_pickles(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(WeightsFileError, match="refused"):
        read_state_dict(malicious(tmp_path / "w.pth", marker))
    assert not marker.exists()


def test_a_malicious_checkpoint_is_never_unpickled(trained_toy_copy, tmp_path):
    """gentool's own checkpoints: a planted step file is skipped (never unpickled); sample uses the good one."""
    marker, run_dir = tmp_path / "ran", tmp_path / "runs" / "toy"
    malicious(ckpt.checkpoint_path(run_dir, 99), marker, model={}, step=99)
    result = runner.invoke(app, ["sample", str(run_dir), "--n", "2", "--steps", "2", "--grid-only",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "checkpoint step = 2" in result.output
    assert not marker.exists()


def test_a_flipped_bit_is_a_corrupt_checkpoint(trained_toy_copy, tmp_path):
    """A checkpoint's tensors carry a CRC-32: one flipped bit in the weights is found at load."""
    run_dir = tmp_path / "runs" / "toy"
    path = ckpt.checkpoint_path(run_dir, 2)
    state = ckpt.load_checkpoint(path)
    assert state["checksum"].startswith("crc32:")
    key = next(k for k, v in state["model"].items() if v.dtype == torch.float32 and v.numel() > 8)
    needle = state["model"][key].contiguous().view(torch.uint8).numpy().tobytes()[:16]
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at > 0, "the tensor's bytes are stored uncompressed"
    data[at + 3] ^= 0x01  # one bit of one float
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.load_checkpoint(path)
    assert ckpt.latest_good(run_dir, on_bad=lambda m: None, quarantine_bad=True) is None
    assert path.with_name(path.name + ".corrupt").exists()


# -- plugins ---------------------------------------------------------------------------

@pytest.fixture
def site(tmp_path, monkeypatch):
    """``add(dist, source, ep_name)``: a throwaway installed plugin package (module + dist-info) on sys.path."""
    root = tmp_path / "site"
    root.mkdir()
    made = []

    def add(dist: str, source: str, *, ep_name: str) -> None:
        module = f"{dist.replace('-', '_')}_{tmp_path.name[-8:].replace('-', '_')}"
        (root / f"{module}.py").write_text(source, encoding="utf-8")
        info = root / f"{dist.replace('-', '_')}-6.6.6.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 6.6.6\n", encoding="utf-8")
        (info / "entry_points.txt").write_text(f"[gentool]\n{ep_name} = {module}\n", encoding="utf-8")
        made.append(module)

    monkeypatch.delenv("GENTOOL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("GENTOOL_BLOCK_PLUGINS", raising=False)
    monkeypatch.syspath_prepend(str(root))  # found before the built-ins' own metadata
    plugins.reset()
    yield add
    plugins.reset()
    for module in made:
        sys.modules.pop(module, None)


IMPOSTOR = '''
import torch
import gentool


def linear(*, timesteps: int = 10) -> torch.Tensor:
    """Not Ho et al.'s linear schedule."""
    return torch.full((timesteps,), 0.5, dtype=torch.float64)


@gentool.hookimpl
def gentool_register_schedules(register):
    register("linear", linear)
'''


def test_a_plugin_named_like_a_builtin_never_replaces_it(site):
    site("gentool-impostor", IMPOSTOR, ep_name="schedules")
    st = load_plugins()
    assert st.registry.get("schedule", "linear").plugin == "schedules"
    assert next(p for p in st.plugins if p.name == "schedules").package == "gentool"
    error = {b.name: b for b in st.broken}["schedules"]
    assert error.package == "gentool-impostor"
    assert "gentool-impostor 6.6.6" in error.error and "gentool " in error.error and "built-in" in error.error
    betas = st.registry.get("schedule", "linear").factory(timesteps=10)
    assert float(betas[0]) == pytest.approx(1e-4)  # Ho et al.'s beta_1, not the impostor's 0.5


@pytest.mark.parametrize("raise_", ["raise SystemExit(3)", "raise GeneratorExit()",
                                    "class Odd(BaseException): pass\nraise Odd('odd')"])
def test_a_plugin_raising_a_base_exception_at_import_is_contained(site, raise_):
    site("gentool-exits", raise_ + "\n", ep_name="exits")
    st = load_plugins()
    assert "exits" in {b.name for b in st.broken}
    assert ("schedule", "linear") in st.registry
    plugins.reset(st)
    result = runner.invoke(app, ["list-plugins"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "BROKEN" in result.output


def test_ctrl_c_is_not_contained(site):
    """A real KeyboardInterrupt while importing a plugin still stops the process."""
    site("gentool-ctrlc", "raise KeyboardInterrupt\n", ep_name="ctrlc")
    with pytest.raises(KeyboardInterrupt):
        load_plugins()


# -- paths ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", "."])
def test_run_name_is_one_path_component(tiny_recipe, name):
    with pytest.raises(RecipeError, match="run.name: .* is not a run name"):
        gentool.load_recipe(tiny_recipe, overrides=[f'run.name="{name}"'])


def test_every_torch_load_in_gentool_and_its_plugins_is_weights_only():
    """A static check over the source: each ``torch.load(...)`` call passes ``weights_only=True``."""
    import ast

    root = pathlib.Path(__file__).resolve().parents[1]
    unsafe = []
    for path in [*(root / "gentool").rglob("*.py"), *(root / "plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    unsafe.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not unsafe, unsafe
