"""gentool export --format diffusers: diffusers itself loads the folder and computes what gentool computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gentool.testing import tiny_run

diffusers = pytest.importorskip("diffusers")

from gentool.cli import app  # noqa: E402
from gentool.engine.export_diffusers import (DiffusersExportError, build_unet, diffusers_labels,  # noqa: E402
                                             export_run, scheduler_config)

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomised(run, scale: float = 0.1):
    """Every weight moved off its initial value (zero-initialised layers would hide a wrong mapping)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for model in filter(None, (run.model, run.ema)):
            for p in model.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A conditional and an unconditional tiny run (T = 10), randomised, each exported."""
    root = tmp_path_factory.mktemp("diffusers")
    out = {}
    for conditional in (True, False):
        run = _randomised(tiny_run(root / f"runs{conditional}", conditional=conditional, timesteps=10))
        out[conditional] = run, export_run(run, root / f"export{conditional}")
    return out


@pytest.mark.parametrize("conditional", [True, False])
def test_the_pipelines_load_and_the_network_output_matches(exported, conditional):
    run, folder = exported[conditional]
    ddpm = diffusers.DDPMPipeline.from_pretrained(folder)
    ddim = diffusers.DDIMPipeline.from_pretrained(folder)
    assert isinstance(ddim.scheduler, diffusers.DDIMScheduler)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 3, 7, 9])
    labels = torch.tensor([0, 1, -1, 1]) if conditional else None
    with torch.no_grad():
        ours = run.sampling_model.eval()(x, t, labels)
        kwargs = {"class_labels": diffusers_labels(labels, 2)} if conditional else {}
        theirs = ddpm.unet(x, t, **kwargs).sample
    assert ours.abs().max() > 0.1  # a real output, not the zero of an untouched last layer
    assert (ours - theirs).abs().max() < 1e-5
    if conditional:  # the null label is the last row: gentool's -1 (the classifier-free guidance branch)
        assert ddpm.unet.config.num_class_embeds == 3
        assert torch.equal(ddpm.unet.class_embedding.weight[2], run.sampling_model.conditioner.null.detach())
    else:
        assert ddpm.unet.config.num_class_embeds is None


def test_ddim_through_the_diffusers_pipeline_gives_gentools_samples(exported):
    run, folder = exported[False]
    pipe = diffusers.DDIMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    T = run.diffusion.num_timesteps
    with torch.no_grad():
        theirs = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), num_inference_steps=T, eta=0.0,
                      use_clipped_model_output=True, output_type="pt").images
    ours = run.sample(3, generator=torch.Generator().manual_seed(7), steps=T, sampler="ddim",
                      sampler_options={"eta": 0.0}, progress=False, fast=False)
    ours = (ours / 2 + 0.5).clamp(0, 1)  # the pipeline's output mapping
    assert theirs.shape == ours.shape
    assert float(ours.std()) > 0.05
    assert (ours - theirs).abs().max() < 1e-4


def test_the_scheduler_carries_the_betas_and_the_options(exported, tmp_path):
    run, folder = exported[False]
    scheduler = diffusers.DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.beta_schedule == "linear" and scheduler.config.trained_betas is None
    assert torch.allclose(scheduler.alphas_cumprod.double(), run.diffusion.alphas_cumprod_64, rtol=1e-5)
    assert scheduler.config.prediction_type == "epsilon" and scheduler.config.variance_type == "fixed_large"
    # a schedule that no diffusers formula gives travels as trained_betas; cosine maps to squaredcos_cap_v2
    sig = tiny_run(tmp_path / "sig", conditional=False, timesteps=10)
    for schedule, expect in (("sigmoid", None), ("cosine", "squaredcos_cap_v2")):
        from gentool.recipe import load_recipe
        from gentool.run import build
        from gentool.testing import tiny_recipe

        data = tiny_recipe(tmp_path, conditional=False, timesteps=10)
        data["schedule"] = {"name": schedule, "timesteps": 10}
        data["sampler"] = {"name": "ancestral", "variance": "beta_tilde"}
        sig = build(load_recipe(data=data), device="cpu")
        config = scheduler_config(sig)
        assert config.get("trained_betas") is None if expect else config["trained_betas"] is not None
        assert config["variance_type"] == "fixed_small"
        theirs = diffusers.DDPMScheduler(**config).alphas_cumprod.double()
        assert torch.allclose(theirs, sig.diffusion.alphas_cumprod_64, rtol=1e-5), schedule


def test_what_diffusers_cannot_express_is_refused_by_name(tmp_path):
    run = tiny_run(tmp_path / "a", conditional=True, timesteps=10)

    class OtherConditioner(nn.Module):
        num_classes = 2

        def forward(self, labels):
            return torch.zeros(labels.shape[0], 128)

    run.ema.conditioner = OtherConditioner()
    with pytest.raises(DiffusersExportError, match="conditioner.name = 'class_embedding'"):
        build_unet(run)

    class NotAUNet(nn.Module):
        prediction, cond_dim = "eps", None

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x, t, cond=None):
            return self.conv(x)

    run.ema.denoiser, run.ema.conditioner = NotAUNet(), None
    with pytest.raises(DiffusersExportError, match="denoiser.name = 'unet'"):
        build_unet(run)


def test_the_command_line_writes_a_folder(trained_toy, tmp_path):
    out = tmp_path / "hf"
    result = CliRunner().invoke(app, ["export", str(trained_toy.run_dir), "--format", "diffusers", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model_index.json").exists() and (out / "unet" / "config.json").exists()
    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    assert pipe.unet.config.num_class_embeds == 3
    bad = CliRunner().invoke(app, ["export", str(trained_toy.run_dir), "--format", "onnx", str(out)])
    assert bad.exit_code == 2 and "safetensors or diffusers" in bad.output


def test_a_learned_variance_exports_as_learned_range(tmp_path):
    from gentool.recipe import load_recipe
    from gentool.run import build
    from gentool.testing import tiny_recipe
    from gentool.vlb import learned_log_variance

    data = tiny_recipe(tmp_path, conditional=False, timesteps=10)
    data["denoiser"]["learn_sigma"] = True
    data["objective"] = {"name": "hybrid"}
    run = _randomised(build(load_recipe(data=data), device="cpu"))
    folder = export_run(run, tmp_path / "hf")
    pipe = diffusers.DDPMPipeline.from_pretrained(folder)
    assert pipe.unet.config.out_channels == 2 and pipe.scheduler.config.variance_type == "learned_range"
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 1, 8, 8, generator=g), torch.tensor([4, 9])
    with torch.no_grad():
        ours, theirs = run.sampling_model.eval()(x, t), pipe.unet(x, t).sample
    assert (ours - theirs).abs().max() < 1e-5
    # diffusers' reverse variance from the exported output is gentool's (Nichol and Dhariwal eq. 15), t > 0
    v = ours[:, 1:]
    pipe.scheduler.set_timesteps(10)
    for i, step in enumerate(t.tolist()):
        theirs_log = pipe.scheduler._get_variance(step, predicted_variance=v[i:i + 1])  # learned_range: a log
        ours_log = learned_log_variance(run.diffusion, v[i:i + 1], t[i:i + 1])
        assert torch.allclose(theirs_log.double(), ours_log.double(), atol=1e-4), step


def export_cli(run_dir, *out):
    return CliRunner().invoke(app, ["export", str(run_dir), "--format", "diffusers", *map(str, out)])


def test_export_never_deletes_what_it_did_not_write(trained_toy, tmp_path, monkeypatch):
    """A folder holding a model_index.json and other files, and ``-o .``, keep every file gentool did not write."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "model_index.json").write_text("{}")  # diffusers' own folder, say, or a user's
    (theirs / "notes.txt").write_text("mine")
    result = export_cli(trained_toy.run_dir, "-o", theirs)
    assert result.exit_code == 2 and "holds files that gentool did not export" in result.output, result.output
    assert (theirs / "notes.txt").read_text() == "mine" and (theirs / "model_index.json").read_text() == "{}"
    here = tmp_path / "here"
    here.mkdir()
    (here / "thesis.tex").write_text("years")
    monkeypatch.chdir(here)
    result = export_cli(trained_toy.run_dir, "-o", ".")
    assert result.exit_code == 2 and f"{here}: holds files" in result.output, result.output
    assert sorted(p.name for p in here.iterdir()) == ["thesis.tex"]
    # an empty current folder takes the export; an earlier export is updated in place
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for _ in range(2):
        result = export_cli(trained_toy.run_dir, "-o", ".")
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in empty.iterdir()) == ["gentool.json", "model_index.json", "scheduler", "unet"]
    assert diffusers.DDPMPipeline.from_pretrained(empty).unet.config.num_class_embeds == 3
    # an earlier export with a file added: refused after the work, nothing changed, no temporary folder left
    (empty / "unet" / "extra.bin").write_bytes(b"x")
    before = {p: p.read_bytes() for p in empty.rglob("*") if p.is_file()}
    result = export_cli(trained_toy.run_dir, "-o", empty)
    assert result.exit_code == 2 and "unet/extra.bin" in result.output, result.output
    assert {p: p.read_bytes() for p in empty.rglob("*") if p.is_file()} == before
