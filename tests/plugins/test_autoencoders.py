"""The built-in autoencoders: kl's loss, training, checkpoints and reconstruction error; diffusers_kl against diffusers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import gentool
from _data_files import tiny_vae
from _latent import latent_recipe, smooth_images
from gentool.cli import app
from gentool_autoencoders.diffusers_kl import diffusers_kl
from gentool_autoencoders.files import WEIGHTS, state_fingerprint
from gentool_autoencoders.kl import kl
from gentool_autoencoders.train import kl_loss, reconstruction_error, train_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The smooth-image folder and a kl autoencoder trained on it (60 steps), with the report of its test split."""
    tmp = tmp_path_factory.mktemp("kl")
    images = smooth_images(tmp / "images")
    recipe = gentool.load_recipe(data=latent_recipe(tmp, images=images, autoencoder=tmp / "ae"))
    report = train_autoencoder(recipe, log=lambda m: None, progress=False)
    return recipe, report


def test_kl_loss_is_l1_plus_the_closed_form_kl_of_the_posterior():
    torch.manual_seed(0)
    model = kl(path="unused", in_channels=3, channels=8, channel_mult=[1, 2])
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    parts = kl_loss(model, x, 0.5, torch.Generator().manual_seed(3))
    mean, logvar = model.moments(x)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    kl_ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))  # the same draw of z ~ q(z | x)
    l1_ref = (x - model.decode(mean + (0.5 * logvar).exp() * eps)).abs().flatten(1).sum(1).mean()
    torch.testing.assert_close(parts["kl"], kl_ref)
    torch.testing.assert_close(parts["loss"], l1_ref + 0.5 * kl_ref)
    torch.testing.assert_close(parts["l1"], l1_ref / x[0].numel())


def test_trained_kl_reconstructs_the_test_split_better_than_the_mean_image(trained):
    recipe, report = trained
    data = gentool.registry().get("data_source", "image_folder").factory
    train = torch.stack([x for x, _ in data("train", root=recipe.data.options["root"], image_size=16)])
    test = torch.stack([x for x, _ in data("test", root=recipe.data.options["root"], image_size=16)])
    mean_image = float((test - train.mean(0)).square().mean())  # what knowing nothing of an image gives
    assert report["images"] == 16 and report["latent_shape"] == [4, 4, 4]
    assert report["mse"] < 0.75 * mean_image, (report["mse"], mean_image)
    assert report["psnr"] == pytest.approx(10 * math.log10(4 / report["mse"]))
    # the number the report gives is the autoencoder's own error, recomputed here from its weights
    ae = kl(**recipe.autoencoder.options)
    ae.eval()
    with torch.no_grad():
        mse = float((ae.decode(ae.encode(test)).clamp(-1, 1) - test).double().square().mean())
    assert report["mse"] == pytest.approx(mse, rel=1e-5)
    folder = Path(recipe.autoencoder.options["path"])
    assert json.loads((folder / "reconstruction.json").read_text())["mse"] == report["mse"]
    assert (folder / "reconstruction.png").is_file() and len((folder / "metrics.jsonl").read_text().splitlines()) == 2


def test_kl_training_resumes_exactly_from_its_checkpoint(trained, tmp_path):
    recipe, _ = trained
    data = latent_recipe(tmp_path, images=Path(recipe.data.options["root"]), autoencoder=tmp_path / "a")
    data["autoencoder"].update(steps=4, checkpoint_every=2, log_every=2)
    straight = gentool.load_recipe(data=data)
    train_autoencoder(straight, log=lambda m: None, progress=False)
    data["autoencoder"]["path"] = (tmp_path / "b").as_posix()
    train_autoencoder(gentool.load_recipe(data=data, overrides=["autoencoder.steps=2"]), log=lambda m: None,
                      progress=False)
    said = []
    train_autoencoder(gentool.load_recipe(data=data), log=said.append, progress=False)
    assert any("resuming from" in line and "step_00000002" in line for line in said)
    a, b = kl(**straight.autoencoder.options), kl(**gentool.load_recipe(data=data).autoencoder.options)
    assert a.trained_steps == b.trained_steps == 4
    assert state_fingerprint(a) == state_fingerprint(b)


def test_kl_weights_of_other_options_are_refused_naming_them(trained):
    recipe, _ = trained
    options = {**recipe.autoencoder.options, "channels": 16}
    with pytest.raises(ValueError, match=r"channels: file 8, recipe 16"):
        kl(**options)


def test_kl_without_weights_says_how_to_train_them(tmp_path):
    ae = kl(path=str(tmp_path / "none"))
    assert "gentool autoencoder train" in ae.missing_weights() and ae.fingerprint == ""


def test_a_pickle_in_place_of_the_weights_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.mkdir, (marker,))

    folder = tmp_path / "ae"
    folder.mkdir()
    (folder / WEIGHTS).write_bytes(__import__("pickle").dumps(Payload()))
    with pytest.raises(ValueError, match="not a safetensors file"):
        kl(path=str(folder))
    assert not marker.exists()


def test_autoencoder_command_trains_and_tests_and_refuses_an_identity_recipe(trained, tmp_path):
    recipe, _ = trained
    data = latent_recipe(tmp_path, images=Path(recipe.data.options["root"]), autoencoder=tmp_path / "ae")
    data["autoencoder"].update(steps=2, log_every=1)
    path = tmp_path / "r.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["autoencoder", "train", str(path)])
    assert result.exit_code == 0, result.output
    assert "step 2: L1" in result.output and (tmp_path / "ae" / WEIGHTS).is_file()
    result = CliRunner().invoke(app, ["autoencoder", "test", str(path), "--images", "4"])
    assert result.exit_code == 0 and "reconstruction of 4 test images" in result.output, result.output
    del data["autoencoder"]  # pixel space: nothing to train
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["autoencoder", "train", str(path)])
    assert result.exit_code == 2 and "gentool trains the \"kl\" autoencoder" in result.output, result.output


# -- diffusers' AutoencoderKL from a folder ------------------------------------------------------

def test_diffusers_adapter_round_trip_equals_diffusers_own(tmp_path):
    vae = tiny_vae(in_channels=3)
    vae.save_pretrained(tmp_path / "vae")
    ae = diffusers_kl(path=str(tmp_path / "vae"))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        mode = vae.encode(x).latent_dist.mode()  # diffusers' own, on the weights it saved
        z = ae.encode(x)
        assert torch.equal(z, mode) and torch.equal(mode, vae.encode(x).latent_dist.mean)
        assert torch.equal(ae.decode(z), vae.decode(mode).sample)
    assert ae.latent_shape((3, 8, 8)) == (4, 4, 4) and ae.image_shape((4, 4, 4)) == (3, 8, 8)
    assert ae.fingerprint == state_fingerprint(vae) and ae.scale_factor is None


def test_diffusers_adapter_never_downloads_unless_asked(tmp_path, monkeypatch):
    import diffusers

    seen = {}

    def from_pretrained(path, **kwargs):
        seen.update(kwargs, path=path)
        return tiny_vae(in_channels=3)

    monkeypatch.setattr(diffusers.AutoencoderKL, "from_pretrained", staticmethod(from_pretrained))
    with pytest.raises(ValueError, match="no such folder.*download = true"):
        diffusers_kl(path="stabilityai/sd-vae-ft-mse")
    assert not seen  # refused before diffusers was asked
    (tmp_path / "vae").mkdir()
    diffusers_kl(path=str(tmp_path / "vae"))
    assert seen["local_files_only"] is True and seen["use_safetensors"] is True
    diffusers_kl(path="stabilityai/sd-vae-ft-mse", download=True)
    assert seen["local_files_only"] is False


def test_reconstruction_error_is_the_mse_of_decode_of_encode():
    class Half(torch.nn.Module):
        def encode(self, x):
            return x

        def decode(self, z):
            return 0.5 * z

    data = [(torch.full((1, 2, 2), v), -1) for v in (0.5, -1.0, 1.0)]
    metrics, _, _ = reconstruction_error(Half(), data, torch.device("cpu"), batch=2)
    mse = sum((0.5 * v) ** 2 for v in (0.5, -1.0, 1.0)) / 3  # |x - x / 2|^2 per value
    assert metrics["mse"] == pytest.approx(mse) and metrics["psnr"] == pytest.approx(10 * math.log10(4 / mse))
