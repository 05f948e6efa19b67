"""Latent diffusion end to end: a run on an autoencoder's latents trains, samples, inpaints and evaluates; the
latent cache (safetensors, keyed by the autoencoder's weights) and the scale factor stored with the run."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import tomli_w

import gentool
from _latent import latent_recipe, smooth_images
from gentool.api import run_recipe
from gentool.latent import LatentError
from gentool.latent_cache import cache_key, cache_path
from gentool_autoencoders.kl import kl
from gentool_autoencoders.train import train_autoencoder
from gentool_tasks.inpaint import latent_mask

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = [{"name": "sample", "n": 4},
         {"name": "inpaint", "indices": [0, 1], "steps": 4, "resamplings": 1, "sampler": "ddim"},
         {"name": "inpaint", "indices": [0, 1], "steps": 4, "resamplings": 2, "jump_length": 2, "mask_space": "pixel"},
         {"name": "variations", "indices": [0], "n": 2, "t": 0.5, "steps": 4},
         {"name": "interpolate", "indices": [0, 1], "frames": 3, "t": 0.5, "steps": 4}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The smooth-image folder and a kl autoencoder trained on it for 20 steps."""
    tmp = tmp_path_factory.mktemp("latent")
    images = smooth_images(tmp / "images", n_train=32, n_test=8)
    data = latent_recipe(tmp, images=images, autoencoder=tmp / "ae")
    data["autoencoder"].update(steps=20)
    train_autoencoder(gentool.load_recipe(data=data), log=lambda m: None, progress=False)
    return images, tmp / "ae"


def recipe(tmp_path: Path, setup, **changes) -> dict:
    images, ae = setup
    data = latent_recipe(tmp_path, images=images, autoencoder=ae, tasks=changes.pop("tasks", None))
    data["autoencoder"]["steps"] = 20
    for table, keys in changes.items():
        data[table].update(keys)
    return data


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "latent.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def pixels(root: Path, split: str) -> torch.Tensor:
    data = gentool.registry().get("data_source", "image_folder").factory(split, root=str(root), image_size=16)
    return torch.stack([x for x, _ in data])


class Mean16:
    """A torch-fidelity feature extractor of a colour image's mean and spread, refusing anything but 3x16x16."""

    seen: list = []


def mean16_extractor():
    from torch_fidelity import FeatureExtractorBase, register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    class Features(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)

        @staticmethod
        def get_provided_features_list():
            return ("stats",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "stats"

        def forward(self, x):
            assert tuple(x.shape[1:]) == (3, 16, 16) and x.dtype == torch.uint8, tuple(x.shape)  # decoded images
            Mean16.seen.append(x.shape[0])
            x = x.float() / 255
            return (torch.cat([x.mean((2, 3)), x.std((2, 3))], 1),)

    if "test-mean16" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("test-mean16", Features)
    return "test-mean16"


def test_a_latent_run_trains_samples_inpaints_and_evaluates(setup, tmp_path):
    data = recipe(tmp_path, setup, tasks=TASKS)
    result = run_recipe(write(tmp_path, data), progress=False, log=lambda m: None)
    run, tasks = result.run, dict(result.tasks)
    assert run.latent and run.latent_shape == (4, 4, 4) and run.image_shape == (3, 16, 16) and run.step == 2
    grid = tasks["sample"].files[0]
    from PIL import Image

    assert Image.open(grid).mode == "RGB"
    for name in ("inpaint", "inpaint_2"):  # the known pixels are the inputs' exactly, in both mask spaces
        assert tasks[name].metrics["known_max_error"] == 0.0 and tasks[name].metrics["hole_mse"] > 0
    assert tasks["variations"].metrics["mse_to_input"] > 0
    record = json.loads((run.run_dir / "latent.json").read_text())
    assert record["scale_factor"] == run.scale_factor and record["fingerprint"] == run.space.fingerprint
    assert record["latent_shape"] == [4, 4, 4] and record["table"]["path"] == data["autoencoder"]["path"]

    loaded = gentool.load_run(run.run_dir, device="cpu")
    assert loaded.space.scale_factor == run.scale_factor and loaded.space.scale_source == "checkpoint"
    x = loaded.sample(3, steps=3, progress=False)
    assert x.shape == (3, 3, 16, 16) and float(x.abs().max()) <= 1.0
    z = loaded.sample(3, steps=3, progress=False, decode=False)
    torch.testing.assert_close(loaded.decode(z), x)  # sampling decodes what it sampled in latent space

    from gentool.config import EvalConfig
    from gentool.evaluation import evaluate

    Mean16.seen.clear()
    report = evaluate(loaded, EvalConfig(metrics=["fid", "loss_t"], n=10, batch_size=5,
                                         feature_extractor=mean16_extractor()), progress=False)
    assert report["metrics"]["fid"] > 0 and "loss_t/10" in report["metrics"]
    assert sum(Mean16.seen) >= 10  # the samples reached the extractor decoded, as 3x16x16 images


def test_the_scale_factor_is_one_over_the_std_of_the_encoded_training_images(setup, tmp_path):
    images, folder = setup
    run = gentool.build(gentool.load_recipe(data=recipe(tmp_path, setup)), device="cpu")
    assert run.space.scale_factor is None  # not measured until the latents are needed
    ae = kl(path=str(folder), channels=8, channel_mult=[1, 2, 2]).eval()
    x = pixels(images, "train")
    with torch.no_grad():  # the train split and its mirror images (random_flip), encoded here directly
        z = torch.cat([ae.encode(x), ae.encode(x.flip(-1))])
    s = 1.0 / float(z.double().std())
    assert run.scale_factor == pytest.approx(s, rel=1e-6)
    data = run.latent_dataset("train")
    assert len(data) == 2 * len(x)
    torch.testing.assert_close(data.images, z * s, rtol=1e-5, atol=1e-6)
    assert float(data.images.double().std()) == pytest.approx(1.0, rel=1e-5)
    test = pixels(images, "test")[:2]
    with torch.no_grad():
        torch.testing.assert_close(run.encode(test), s * ae.encode(test), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(run.decode(run.encode(test)), ae.decode(ae.encode(test)).clamp(-1, 1),
                                   rtol=1e-5, atol=1e-5)


def test_a_scale_factor_in_the_recipe_is_used_as_given(setup, tmp_path):
    run = gentool.build(gentool.load_recipe(data=recipe(tmp_path, setup, autoencoder={"scale_factor": 0.5})),
                        device="cpu")
    assert run.scale_factor == 0.5 and float(run.latent_dataset("train").images.std()) != pytest.approx(1.0, rel=1e-3)


def count_encodings(monkeypatch) -> list:
    import gentool.latent_cache as lc

    calls, encode = [], lc.encode_split
    monkeypatch.setattr(lc, "encode_split", lambda *a, **k: calls.append(1) or encode(*a, **k))
    return calls


def test_the_cache_is_reused_and_rebuilt_when_the_autoencoder_changes(setup, tmp_path, monkeypatch):
    calls = count_encodings(monkeypatch)
    data = recipe(tmp_path, setup)
    first = gentool.build(gentool.load_recipe(data=data), device="cpu").latent_dataset("train")
    again = gentool.build(gentool.load_recipe(data=data), device="cpu").latent_dataset("train")
    assert calls == [1] and torch.equal(first.images, again.images)  # the second run read the cache
    files = sorted((tmp_path / "runs" / "latent_cache").glob("*.safetensors"))
    assert len(files) == 1
    # other weights: a copy of the autoencoder trained one step further
    import shutil

    moved = tmp_path / "ae2"
    shutil.copytree(data["autoencoder"]["path"], moved)
    data["autoencoder"]["path"] = moved.as_posix()  # the same weights elsewhere: the same cache
    gentool.build(gentool.load_recipe(data=data), device="cpu").latent_dataset("train")
    assert calls == [1]
    data["autoencoder"]["steps"] = 21
    train_autoencoder(gentool.load_recipe(data=data), log=lambda m: None, progress=False)
    third = gentool.build(gentool.load_recipe(data=data), device="cpu").latent_dataset("train")
    assert calls == [1, 1] and not torch.equal(first.images, third.images)
    assert len(sorted((tmp_path / "runs" / "latent_cache").glob("*.safetensors"))) == 2  # the old one is kept


def test_a_hostile_file_at_the_cache_path_is_never_loaded(setup, tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.mkdir, (marker,))

    data = recipe(tmp_path, setup)
    run = gentool.build(gentool.load_recipe(data=data), device="cpu")
    factory = run.registry.get("data_source", "image_folder").factory
    split = factory("train", **{**run.recipe.data.options, "random_flip": False})
    path = cache_path(run.recipe, cache_key(run.recipe, run.space, "train", split, flip=True))
    path.parent.mkdir(parents=True)
    for hostile in (pickle.dumps(Payload()), None):  # a pickle, then a torch.save file (a zip of pickles)
        if hostile is None:
            torch.save({"latents": Payload()}, path)
        else:
            path.write_bytes(hostile)
        said = []
        run = gentool.build(gentool.load_recipe(data=data), device="cpu")
        latents = run.latent_dataset("train", log=said.append)
        assert not marker.exists()
        assert any("not a latent cache" in line and ".corrupt" in line for line in said), said
        assert path.with_name(path.name + ".corrupt").is_file() and len(latents) == 64
        from safetensors.torch import load_file

        assert set(load_file(path)) == {"latents", "labels"}  # rebuilt in its place


def test_latent_mask_keeps_a_cell_only_where_every_pixel_of_it_is_known():
    known = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.2).float()
    got = latent_mask(known, (4, 4))
    want = torch.zeros(2, 1, 4, 4)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                want[b, 0, i, j] = float(bool(known[b, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4].all()))
    assert torch.equal(got, want) and 0 < float(got.sum()) < 32


def test_samplers_never_clip_latents_unless_asked(setup, tmp_path):
    run = gentool.build(gentool.load_recipe(data=recipe(tmp_path, setup)), device="cpu")
    assert run.recipe.sampler.options["clip_denoised"] is True  # the recipe's default, for images
    assert gentool.plan(run).sampler.keywords["clip_denoised"] is False
    assert gentool.plan(run, gentool.SamplingOptions(sampler="ancestral")).sampler.keywords["clip_denoised"] is False
    asked = gentool.SamplingOptions(sampler_options={"clip_denoised": True})
    assert gentool.plan(run, asked).sampler.keywords["clip_denoised"] is True


def test_bits_per_dim_is_refused_for_a_latent_run(setup, tmp_path):
    from gentool.evaluation.likelihood import bpd_metric

    run = gentool.build(gentool.load_recipe(data=recipe(tmp_path, setup)), device="cpu")
    with pytest.raises(gentool.UsageError, match="8-bit pixels"):
        bpd_metric(run, batch_size=4, max_batches=1)


def test_a_diffusers_pipeline_export_is_refused_for_a_latent_run(setup, tmp_path):
    from gentool.engine.export_diffusers import DiffusersExportError, export_run

    run = gentool.build(gentool.load_recipe(data=recipe(tmp_path, setup)), device="cpu")
    with pytest.raises(DiffusersExportError, match="no autoencoder to decode them"):
        export_run(run, tmp_path / "pipe")
    assert not (tmp_path / "pipe").exists()


def test_other_autoencoder_weights_stop_a_resume_and_are_warned_of_when_loading(setup, tmp_path):
    data = recipe(tmp_path, setup)
    run = run_recipe(write(tmp_path, data), progress=False, log=lambda m: None).run
    ckpt = run.checkpoint
    state = torch.load(ckpt, weights_only=True)
    state["latent"]["fingerprint"] = "0" * 64  # as if the autoencoder had been retrained since
    from gentool.engine.checkpoint import save_checkpoint

    save_checkpoint({k: v for k, v in state.items() if k != "checksum"}, ckpt)
    with pytest.warns(UserWarning, match="decode with other weights"):
        gentool.load_run(run.run_dir, device="cpu")
    with pytest.raises(LatentError, match="resuming would train on other latents"):
        run_recipe(write(tmp_path, data), overrides=["train.steps=3"], progress=False, log=lambda m: None)


def test_gentool_check_describes_the_latents_and_refuses_a_denoiser_of_another_shape(setup, tmp_path):
    from gentool.api import summarize

    summary = summarize(gentool.load_recipe(data=recipe(tmp_path, setup)))
    assert summary["autoencoder"].startswith("kl: 3x16x16 images to 4x4x4 latents, weights ")
    bad = gentool.load_recipe(data=recipe(tmp_path, setup, denoiser={"image_size": 8}))
    with pytest.raises(gentool.RecipeError, match="encodes to 4x4x4 latents, but the denoiser is built for 4x8x8"):
        summarize(bad)
    untrained = gentool.load_recipe(data=recipe(tmp_path, setup, autoencoder={"path": str(tmp_path / "none")}))
    assert any("gentool autoencoder train" in w for w in summarize(untrained)["warnings"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = gentool.build(untrained, device="cpu")
    with pytest.raises(LatentError, match="no trained weights"):
        run.sample(1, steps=2, progress=False)


TINY_DENOISERS = {"dit": {"image_size": 4, "patch_size": 2, "depth": 1, "hidden_size": 32, "num_heads": 2},
                  "unet": {"image_size": 4, "channels": 32, "channel_mult": [1], "num_res_blocks": 1,
                           "attention_resolutions": []}}


@pytest.mark.parametrize("name", ["butterflies_latent_dit", "butterflies_latent_unet"])
def test_the_butterfly_recipes_run_on_an_image_folder(name, setup, tmp_path):
    """The recipe as shipped, its hub data set swapped for the tests' image folder and every size made tiny."""
    import tomllib

    images, _ = setup
    data = tomllib.loads((Path(__file__).parents[1] / "recipes" / f"{name}.toml").read_text(encoding="utf-8"))
    data["run"].update(output_dir=(tmp_path / "runs").as_posix(), device="cpu", threads=1)
    data["data"] = {"name": "image_folder", "root": images.as_posix(), "image_size": 16, "random_flip": True}
    data["autoencoder"].update(path=(tmp_path / "kl").as_posix(), channels=8, num_res_blocks=1, steps=3,
                               batch_size=8, log_every=3)
    data["denoiser"].update(TINY_DENOISERS[data["denoiser"]["name"]])
    data["train"].update(steps=1, batch_size=8, sample_every=0, checkpoint_every=1)
    data["sampler"]["steps"] = 2
    for task in data["tasks"]:
        task.update({"n": 2} if task["name"] == "sample" else {"indices": [0], "steps": 2})
    path = write(tmp_path, data)
    train_autoencoder(gentool.load_recipe(path), log=lambda m: None, progress=False)
    result = run_recipe(path, progress=False, log=lambda m: None)
    assert result.run.latent_shape == (4, 4, 4) and [n for n, _ in result.tasks] == ["sample", "inpaint"]
    assert dict(result.tasks)["inpaint"].metrics["known_max_error"] == 0.0
