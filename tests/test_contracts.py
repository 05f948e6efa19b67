"""Every built-in component passes the contract checks of :mod:`gentool.testing`.

The tests are parametrised over every name the built-in plugins register, so
a new component is checked the moment it is registered, with its factory's
defaults. Where the defaults are too big for a unit test or need files on
disk, add small options to ``OPTIONS`` below (or a writer to ``DATA_FILES`` in
``tests/_data_files.py``).
The second half checks that each check catches the mistake it exists for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

import gentool
from _data_files import AUTOENCODER_FILES, DATA_FILES
from _distill import contract_teacher, gaussian_consistency_fn
from gentool import testing
from gentool.interfaces import KINDS
from gentool.plugins import registry, state

TINY_UNET = dict(in_channels=1, image_size=8, channels=32, channel_mult=[1, 2], num_res_blocks=1,
                 attention_resolutions=[4], dropout=0.0)
TINY_DIT = dict(in_channels=1, image_size=8, patch_size=2, depth=2, hidden_size=32, num_heads=2)
#: (kind, name) -> recipe options replacing too-big defaults.
OPTIONS: dict[tuple[str, str], dict] = {
    ("denoiser", "unet"): TINY_UNET,
    ("denoiser", "dit"): TINY_DIT,
    ("task", "sample"): {"n": 4},
}
def _processes(*names: str) -> list:
    """Built processes at their defaults (for objectives that no reference process fits)."""
    reg = gentool.registry()
    return [reg.get("process", n).factory() for n in names]


#: Keyword arguments of the check itself (not recipe options); a callable gives them when the test runs.
CHECK_KWARGS: dict[tuple[str, str], dict | Callable[[], dict]] = {
    ("feature_extractor", "gentool-cnn28"): {"image_size": 28},
    ("objective", "edm"): lambda: {"processes": _processes("edm", "ve")},  # alpha = 1 only
    # the distillations: a tiny trained teacher each (tests/_distill.py); consistency models on alpha = 1 only
    ("objective", "progressive"): lambda: contract_teacher("progressive"),
    ("objective", "consistency"): lambda: {**contract_teacher("consistency"), "processes": _processes("edm")},
    ("objective", "ect"): lambda: {**contract_teacher("ect"), "processes": _processes("edm")},
    ("objective", "reflow"): lambda: contract_teacher("reflow"),
    ("sampler", "consistency"): lambda: {"processes": _processes("edm", "ve"), "exact": gaussian_consistency_fn},
}
#: Components whose only defaults need a download: the full check runs when
#: the file is present, the calling convention and documentation always.
INCEPTION = Path(torch.hub.get_dir()) / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
DOWNLOADS: dict[tuple[str, str], tuple[Path, dict]] = {
    ("feature_extractor", "inception-v3-compat"): (INCEPTION, {"weights_path": str(INCEPTION)}),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def builtin_components() -> list:
    st = state()
    builtin = {p.name for p in st.plugins if p.builtin}
    return [c for c in gentool.registry().components() if c.plugin in builtin]


def params():
    return [pytest.param(c.kind, c.name, id=f"{c.kind}:{c.name}") for c in builtin_components()]


# -- the built-ins -----------------------------------------------------------------------

def check_registered(kind: str, name: str, tmp_path: Path, monkeypatch) -> None:
    factory = gentool.registry().get(kind, name).factory
    options = dict(OPTIONS.get((kind, name), {}))
    extra = CHECK_KWARGS.get((kind, name), {})
    extra = extra() if callable(extra) else extra
    if (kind, name) in DOWNLOADS:
        path, download_options = DOWNLOADS[(kind, name)]
        testing.check_factory(kind, factory)
        if not path.is_file():
            return  # needs a download; the calling convention and docs were checked
        options.update(download_options)
    if kind == "schedule":
        testing.check_schedule(factory, **options)
    elif kind == "process":
        testing.check_process_factory(factory, **options)
    elif kind == "denoiser":
        testing.check_factory(kind, factory)
        net = factory(**testing._resolve(kind, factory, options))
        shape = (2, options.get("in_channels", 3), options.get("image_size", 8), options.get("image_size", 8))
        testing.check_denoiser(net, shape)
    elif kind == "conditioner":
        testing.check_factory(kind, factory)
        testing.check_conditioner(factory(64, **testing._resolve(kind, factory, options)), 64)
    elif kind == "sampler":
        testing.check_sampler(factory, **extra, **options)
    elif kind == "task":
        testing.check_task(factory, testing.tiny_run(tmp_path / "runs"), out_dir=tmp_path / "out", **options)
    elif kind == "data_source":
        if name in DATA_FILES:
            options = {**DATA_FILES[name](tmp_path, monkeypatch), **options}
        testing.check_data_source(factory, **options)
    elif kind == "feature_extractor":
        testing.check_feature_extractor(factory, **extra, **options)
    elif kind == "objective":
        testing.check_objective(factory, **extra, **options)
    elif kind == "autoencoder":
        if name in AUTOENCODER_FILES:
            options = {**AUTOENCODER_FILES[name](tmp_path), **options}
        testing.check_autoencoder(factory, image_shape=(1, 8, 8), **options)
    elif kind == "logger":
        testing.check_logger(factory, tmp_path / "run", **options)
    elif kind == "command":
        testing.check_command(name, factory)
    else:  # pragma: no cover - a new kind needs a check here
        raise AssertionError(f"no contract check for kind {kind!r}; add one to gentool.testing and here")


@pytest.mark.parametrize("kind, name", params())
def test_builtin_component_passes_its_contract(kind, name, tmp_path, monkeypatch):
    check_registered(kind, name, tmp_path, monkeypatch)


def test_every_kind_has_builtins_and_a_check():
    kinds = {c.kind for c in builtin_components()}
    assert kinds == set(KINDS), f"kinds without a built-in component: {set(KINDS) - kinds}"


def test_overrides_name_registered_components():
    names = {(c.kind, c.name) for c in builtin_components()}
    stale = [key for key in [*OPTIONS, *CHECK_KWARGS, *DOWNLOADS] if key not in names]
    stale += [("data_source", n) for n in DATA_FILES if ("data_source", n) not in names]
    stale += [("autoencoder", n) for n in AUTOENCODER_FILES if ("autoencoder", n) not in names]
    assert not stale, f"options for components that are no longer registered: {stale}"


# -- each check catches what it exists for ---------------------------------------------------

def good_schedule(*, timesteps: int = 10, beta: float = 0.1) -> torch.Tensor:
    """Constant betas.

    Args:
        timesteps: T.
        beta: the beta.
    """
    return torch.full((timesteps,), beta, dtype=torch.float64)


def test_check_schedule_accepts_a_good_schedule_and_returns_its_betas():
    torch.testing.assert_close(testing.check_schedule(good_schedule, timesteps=3), torch.full((3,), 0.1, dtype=torch.float64))


BROKEN_BETAS = {
    "float32": (lambda T: torch.full((T,), 0.1), "float64"),
    "length": (lambda T: torch.full((T + 1,), 0.1, dtype=torch.float64), "expected 10 betas"),
    "zero": (lambda T: torch.linspace(0, 0.1, T, dtype=torch.float64), r"\(0, 1\)"),
    "random": (lambda T: torch.rand(T, dtype=torch.float64) * 0.1 + 0.01, "different betas"),
}


@pytest.mark.parametrize("mistake", BROKEN_BETAS)
def test_check_schedule_catches(mistake):
    make, message = BROKEN_BETAS[mistake]

    def broken(*, timesteps: int = 10) -> torch.Tensor:
        """Broken betas.

        Args:
            timesteps: T.
        """
        return make(timesteps)

    with pytest.raises(AssertionError, match=message):
        testing.check_schedule(broken)


def test_check_factory_catches_undocumented_and_positional_options():
    def undocumented(*, timesteps: int = 10, beta: float = 0.1) -> torch.Tensor:
        """Constant betas.

        Args:
            timesteps: T.
        """
        return good_schedule(timesteps=timesteps, beta=beta)

    def positional(timesteps: int = 10) -> torch.Tensor:
        """Constant betas."""
        return good_schedule(timesteps=timesteps)

    with pytest.raises(AssertionError, match=r"Args: block.*\['beta'\]"):
        testing.check_schedule(undocumented)
    with pytest.raises(AssertionError, match="positional parameters must be"):
        testing.check_schedule(positional)
    with pytest.raises(AssertionError, match="unknown key 'betta'"):
        testing.check_schedule(good_schedule, betta=0.2)


class Net(torch.nn.Module):
    prediction, cond_dim = "eps", None

    def __init__(self, mode: str = "good") -> None:
        super().__init__()
        self.mode = mode
        self.conv = torch.nn.Conv2d(1, 1, 1)
        self.unused = torch.nn.Linear(2, 2) if mode == "unused" else None

    def forward(self, x_t, t, cond=None):
        out = self.conv(x_t)
        if self.mode == "shape":
            return out[:, :, :-1]
        if self.mode == "dtype":
            return out.double()
        if self.mode == "detached":
            return out.detach()
        if self.mode == "batch":
            return out - out.mean()
        return out


def test_check_denoiser_accepts_a_good_net():
    testing.check_denoiser(Net(), (3, 1, 4, 4))


@pytest.mark.parametrize("mode, message", [("shape", "shape"), ("dtype", "float64"), ("detached", "not differentiable"),
                                           ("batch", "depends on the other samples"), ("unused", "no gradient")])
def test_check_denoiser_catches(mode, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_denoiser(Net(mode), (3, 1, 4, 4))


def _objective(draw=None, loss=None, prediction="eps"):
    ddpm = registry().get("objective", "ddpm").factory()

    def factory(*, scale: float = 1.0):
        """A test objective.

        Args:
            scale: unused.
        """
        return type("Objective", (), {"prediction": prediction, "draw": staticmethod(draw or ddpm.draw),
                                      "loss": staticmethod(loss or ddpm.loss)})()

    return factory


def _global_draw(diffusion, x0, generator):
    return torch.randint(0, diffusion.num_timesteps, (x0.shape[0],)), torch.randn_like(x0)


def _one_based_draw(diffusion, x0, generator):
    """Ho et al.'s 1-based t = T for the noisiest step, where gentool's is T - 1."""
    t = torch.full((x0.shape[0],), diffusion.num_timesteps, dtype=torch.long)
    return t, torch.randn(x0.shape, generator=generator)


def _batch_mixing_loss(net, diffusion, x0, labels, t, noise):
    out = net(diffusion.q_sample(x0, t, noise), t, labels)
    per = (out - noise).square().flatten(1).mean(1)
    return per / per.sum().detach(), {}


def _mean_loss(net, diffusion, x0, labels, t, noise):
    return (net(diffusion.q_sample(x0, t, noise), t, labels) - noise).square().mean(), {}


@pytest.mark.parametrize("objective, message", [
    (_objective(prediction="noise"), "prediction must be one of"),
    (_objective(draw=_global_draw), "global generator"),
    (_objective(draw=_one_based_draw), "0-based"),
    (_objective(loss=_batch_mixing_loss), "depends on the other examples"),
    (_objective(loss=_mean_loss), r"per-example loss \[B\]"),
])
def test_check_objective_catches(objective, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_objective(objective)


def test_check_objective_accepts_ddpm_with_every_prediction():
    factory = registry().get("objective", "ddpm").factory
    for prediction in ("eps", "x0", "v"):
        assert testing.check_objective(factory, prediction=prediction).prediction == prediction


def test_check_logger_catches_a_logger_writing_outside_its_run_directory():
    class Leaky:
        def __init__(self, run_dir):
            self.path = Path(run_dir).parent / "leak.txt"

        def log_scalars(self, step, scalars):
            self.path.write_text(str(scalars))

        def log_image(self, step, name, image):
            pass

        def log_text(self, step, name, text):
            pass

        def close(self):
            pass

    def leaky(run_dir: Path):
        """Writes next to the run."""
        return Leaky(run_dir)

    with pytest.raises(AssertionError, match="outside its run directory"):
        testing.check_logger(leaky)


def test_check_command_catches_an_undocumented_command():
    def bare(name: str) -> None:
        print(name)

    with pytest.raises(AssertionError, match="no docstring"):
        testing.check_command("bare", bare)


def test_check_conditioner_catches_a_random_null_token():
    class Noisy(torch.nn.Module):
        num_classes = 3

        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(3, 4)

        def forward(self, labels):
            out = self.emb(labels.clamp(min=0))
            return torch.where((labels < 0)[:, None], torch.randn_like(out), out)

    with pytest.raises(AssertionError, match="null token"):
        testing.check_conditioner(Noisy(), 4)


def _sampler_doc(fn):
    fn.__doc__ = "A broken sampler.\n"
    return fn


def ancestral():
    return gentool.registry().get("sampler", "ancestral").factory


@pytest.mark.parametrize("name, message", [
    ("global_rng", "identically seeded generators"),
    ("in_place", "modified x_T"),
    ("no_callback", "callback ran 0 times"),
    ("ignores_t_start", "first step must be at t = 100"),
    ("wrong_sign", "std"),
    ("ignores_replacement", "returned by the callback"),
])
def test_check_sampler_catches(name, message):
    base = ancestral()

    def broken(denoise, process, x_T, *, steps=None, t_start=None, generator=None, callback=None):
        if name == "global_rng":
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**30, ())))
        if name == "in_place":
            x_T.mul_(1.0)
            x_T.add_(1e-3)
        if name == "no_callback":
            callback = None
        if name == "ignores_t_start":
            t_start = None
        if name == "wrong_sign":
            def negated(x, t):
                d = denoise(x, t)
                return gentool.Denoised(-d.x0, -d.eps)

            return base(negated, process, x_T, steps=steps, t_start=t_start, generator=generator, callback=callback)
        if name == "ignores_replacement" and callback is not None:
            inner = callback

            def callback(info):
                inner(info)  # the returned replacement is dropped
        return base(denoise, process, x_T, steps=steps, t_start=t_start, generator=generator, callback=callback)

    with pytest.raises(AssertionError, match=message):
        testing.check_sampler(_sampler_doc(broken))


def test_check_task_catches_files_outside_out_dir(tmp_path):
    def leaky(run, out_dir: Path, *, n: int = 1) -> gentool.TaskResult:
        """Writes next to its folder.

        Args:
            n: unused.
        """
        path = out_dir.parent / "leak.txt"
        path.write_text("x")
        return gentool.TaskResult(files=[path])

    run = testing.tiny_run(tmp_path / "runs")
    with pytest.raises(AssertionError, match="outside its out_dir"):
        testing.check_task(leaky, run, out_dir=tmp_path / "out")


@pytest.mark.parametrize("item, message", [
    ((torch.zeros(1, 4, 4, dtype=torch.uint8), 0), "float32"),
    ((torch.full((1, 4, 4), 2.0), 0), r"\[-1, 1\]"),
    ((torch.zeros(1, 4, 4), 1.0), "Python int"),
    ((torch.zeros(4, 4), 0), r"\[C, H, W\]"),
])
def test_check_data_source_catches(item, message):
    def source(split: str, *, n: int = 2) -> list:
        """A broken source.

        Args:
            n: items.
        """
        if split not in ("train", "test"):
            raise ValueError(split)
        return [item] * n

    with pytest.raises(AssertionError, match=message):
        testing.check_data_source(source)


def test_check_data_source_requires_unknown_splits_to_be_refused():
    def lenient(split: str, *, n: int = 2) -> list:
        """Any split.

        Args:
            n: items.
        """
        return [(torch.zeros(1, 4, 4), 0)] * n

    with pytest.raises(AssertionError, match="'validation' must raise ValueError"):
        testing.check_data_source(lenient)


def _source_with_shape(told):
    def source(split: str, *, n: int = 2) -> list:
        """Two grey 4x4 images.

        Args:
            n: items.
        """
        if split not in ("train", "test"):
            raise ValueError(split)
        return [(torch.zeros(1, 4, 4), 0)] * n

    def shape(split: str, *, n: int):
        if split not in ("train", "test"):
            raise ValueError(split)
        return told(split, n)

    source.shape = shape
    return source


def test_check_data_source_holds_shape_to_the_data_set():
    testing.check_data_source(_source_with_shape(lambda split, n: (n, 1, 4, 4)))
    testing.check_data_source(_source_with_shape(lambda split, n: None))  # "only loading can tell"
    with pytest.raises(AssertionError, match=r"train: shape\(\) says \(3, 1, 4, 4\), the data set is \(2, 1, 4, 4\)"):
        testing.check_data_source(_source_with_shape(lambda split, n: (n + 1, 1, 4, 4)))
    lenient = _source_with_shape(lambda split, n: (n, 1, 4, 4))
    lenient.shape = lambda split, *, n: (n, 1, 4, 4)  # any split
    with pytest.raises(AssertionError, match=r"'validation' of shape\(\) must raise ValueError"):
        testing.check_data_source(lenient)


class Pool(torch.nn.Module):
    """A 2x2 average-pool encoder and nearest-neighbour decoder, broken one way per ``mode``."""

    fingerprint, scale_factor = "pool", None

    def __init__(self, mode: str = "good") -> None:
        super().__init__()
        self.mode = mode

    def encode(self, x):
        z = torch.nn.functional.avg_pool2d(x, 4 if self.mode == "shape" else 2)
        return z - z.mean(0) if self.mode == "batch" else z

    def decode(self, z):
        return torch.nn.functional.interpolate(z, scale_factor=2.0)

    def latent_shape(self, image_shape):
        c, h, w = image_shape
        if c != 1 and self.mode != "any_channels":
            raise ValueError("one channel")
        return (c, h // 2, w // 2)

    def image_shape(self, latent_shape):
        c, h, w = latent_shape
        return (c, 2 * h, 2 * w)


def _pool_factory(mode):
    def pool(*, scale: float = 1.0) -> Pool:
        """An average-pool autoencoder.

        Args:
            scale: unused.
        """
        ae = Pool(mode)
        if mode == "no_fingerprint":
            ae.fingerprint = ""
        return ae

    return pool


def test_check_autoencoder_accepts_a_good_autoencoder():
    testing.check_autoencoder(_pool_factory("good"), image_shape=(1, 8, 8))


@pytest.mark.parametrize("mode, message", [("shape", r"encode must return latents \[3, 1, 4, 4\]"), ("batch", "rest of its batch"),
                                           ("any_channels", "must raise ValueError"), ("no_fingerprint", "fingerprint")])
def test_check_autoencoder_catches(mode, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_autoencoder(_pool_factory(mode), image_shape=(1, 8, 8))
