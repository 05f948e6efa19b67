"""``gentool sample`` and the class_grid / guidance_sweep tasks on a tiny trained conditional run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import gentool
from gentool.cli import app
from gentool.recipe import ComponentSpec

from conftest import TINY_RECIPE

runner = CliRunner()
CONDITIONAL = TINY_RECIPE.replace('name = "tiny"', 'name = "tiny_cfg"').replace("class_cond = false", "class_cond = true") + """
[conditioner]
name = "class_embedding"
num_classes = 2
p_uncond = 0.2
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A class-conditional toy run trained for a few steps (module-wide: trained once)."""
    tmp = tmp_path_factory.mktemp("cfg")
    recipe = tmp / "tiny_cfg.toml"
    recipe.write_text(CONDITIONAL.format(out=(tmp / "runs").as_posix()), encoding="utf-8")
    result = gentool.run_recipe(recipe, run_tasks=False, progress=False, log=lambda m: None)
    assert result.run.step == 6
    return result.run.run_dir


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("uncond")
    recipe = tmp / "tiny.toml"
    recipe.write_text(TINY_RECIPE.format(out=(tmp / "runs").as_posix()).replace("steps = 6", "steps = 1"), encoding="utf-8")
    return gentool.run_recipe(recipe, run_tasks=False, progress=False, log=lambda m: None).run.run_dir


def test_sample_writes_pngs_and_says_so(trained, tmp_path):
    out = tmp_path / "out"
    result = invoke("sample", trained, "--sampler", "ddim", "--steps", 5, "--guidance", 2, "--classes", "0,1",
                    "--n", 4, "--seed", 3, "--out", out)
    assert result.exit_code == 0, result.output
    images = sorted((out / "images").glob("*.png"))
    assert [p.name for p in images] == ["00000_class0.png", "00001_class1.png", "00002_class0.png", "00003_class1.png"]
    assert Image.open(images[0]).size == (8, 8)
    grid = Image.open(out / "grid.png")
    assert grid.size == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2)  # one column per class, 2-pixel padding
    assert "wrote" in result.stdout and str(out / "grid.png") in result.stdout.replace("\n", "")
    assert "4 images" in result.stdout and "ddim" in result.stdout


def test_sample_default_folder_and_sampler_options(trained):
    result = invoke("sample", trained, "--sampler", "ddim", "--steps", 3, "-O", "eta=1", "--n", 2, "--grid-only")
    assert result.exit_code == 0, result.output
    folder = trained / "generated" / "ddim_3steps_w0_seed0"
    assert (folder / "grid.png").is_file() and not (folder / "images").exists()


def test_sample_matches_run_sample(trained, tmp_path):
    # the CLI is thin: same settings through the Python API give the same pixels
    invoke("sample", trained, "--sampler", "dpmpp_2m", "--steps", 4, "--guidance", 1.5, "--classes", "1",
           "--n", 1, "--seed", 9, "--out", tmp_path)
    run = gentool.load_run(trained)
    x = run.sample(1, labels=[1], guidance=1.5, sampler="dpmpp_2m", steps=4, generator=run.generator(9), progress=False)
    from gentool.images import to_uint8

    png = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "images" / "00000_class1.png").convert("L")))
    assert torch.equal(png, to_uint8(x)[0, 0])


@pytest.mark.parametrize("args,message", [
    (["--classes", "0,2"], "0..1"),
    (["--classes", "a,b"], "comma-separated"),
    (["--sampler", "nope"], "nope"),
    (["-O", "etta=1", "--sampler", "ddim"], "eta"),
])
def test_sample_reports_bad_input_without_traceback(trained, tmp_path, args, message):
    result = invoke("sample", trained, "--n", 1, "--steps", 2, "--out", tmp_path, *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_classes_and_guidance_need_a_conditional_run(unconditional, tmp_path):
    result = invoke("sample", unconditional, "--classes", "0", "--n", 1, "--steps", 2, "--out", tmp_path)
    assert result.exit_code == 2 and "unconditional" in result.output
    result = invoke("sample", unconditional, "--n", 2, "--steps", 2, "--out", tmp_path)
    assert result.exit_code == 0 and (tmp_path / "grid.png").is_file()


def test_class_grid_has_one_row_per_class_with_shared_seeds(trained, tmp_path):
    run = gentool.load_run(trained)
    result = run.run_task(ComponentSpec("class_grid", {"n_per_class": 3, "steps": 3, "sampler": "ddim"}), tmp_path)
    assert {p.name for p in result.files} == {"class_grid.png", "class_grid.txt"}
    assert Image.open(tmp_path / "class_grid.png").size == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)
    assert (tmp_path / "class_grid.txt").read_text().splitlines() == ["row 0: class 0 (stripe 0)", "row 1: class 1 (stripe 1)"]
    # row c is what the sampler gives for class c from the seed's noise
    x_T = run.noise(3, run.generator(None))
    row1 = run.sample(x_T=x_T, labels=[1, 1, 1], steps=3, sampler="ddim", generator=run.generator(None), progress=False)
    grid = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "class_grid.png").convert("L")))
    from gentool.images import to_uint8

    assert torch.equal(grid[2 + 8 + 2 : 2 + 8 + 2 + 8, 2:10], to_uint8(row1)[0, 0])


def test_guidance_sweep_puts_each_scale_side_by_side(trained, tmp_path):
    run = gentool.load_run(trained)
    spec = ComponentSpec("guidance_sweep", {"scales": [0.0, 3.0], "n": 2, "steps": 3, "sampler": "ddim", "seed": 4})
    result = run.run_task(spec, tmp_path)
    assert [p.name for p in result.files] == ["guidance_sweep.png", "guidance_w0.png", "guidance_w3.png"]
    sweep = Image.open(tmp_path / "guidance_sweep.png")
    k = sweep.size[0] // (2 * 8 + 3 * 2)  # 2 scales across, 2 samples down, enlarged k times for the w labels
    assert sweep.size[0] == k * (2 * 8 + 3 * 2) and k * (2 * 8 + 3 * 2) < sweep.size[1] <= k * (2 * 8 + 3 * 2) + 20
    a = Image.open(tmp_path / "guidance_w0.png").tobytes()
    assert a != Image.open(tmp_path / "guidance_w3.png").tobytes()  # guidance changed the images


def test_class_tasks_refuse_an_unconditional_run(unconditional, tmp_path):
    run = gentool.load_run(unconditional)
    for name in ("class_grid", "guidance_sweep"):
        with pytest.raises(ValueError, match="class-conditional"):
            run.run_task(ComponentSpec(name, {}), tmp_path)
