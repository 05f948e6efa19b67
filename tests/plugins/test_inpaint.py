"""The ``inpaint`` task: known pixels kept, holes filled consistently, RePaint's schedule, masks.

The filling is checked on the two-point data set (every image is -M or +M in
every pixel), whose optimal denoiser is known in closed form: given half an
image, the only consistent completion is the same constant, so a sampler that
really conditions on the known region must paint the hole with the known sign.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import M, solver_samplers
from PIL import Image

import gentool
import gentool.testing
from gentool.images import to_uint8
from gentool.testing import check_task

from gentool_tasks.inpaint import inpaint, inpaint_images, jump_schedule, renoise, replace_known
from gentool_tasks.masks import make_mask

#: the samplers that run on the discrete chain the task runs use (midpoint needs a continuous process)
SAMPLERS = solver_samplers(gentool.testing.reference_diffusion())
pytestmark = pytest.mark.usefixtures("one_thread")
# task_run and two_point_run (conftest): an untrained class-conditional tiny run (T = 20) and one whose
# model is the exact optimal denoiser of the two-point data set


def signs_image(n: int = 8) -> torch.Tensor:
    """Alternating -M and +M constant images [n, 1, 8, 8]."""
    s = torch.tensor([(-1.0) ** k for k in range(n)])
    return (M * s).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_known_pixels_are_kept_for_every_sampler(task_run, sampler):
    x0 = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    known = make_mask(6, (8, 8), mask="random", fraction=0.5, generator=torch.Generator().manual_seed(2))
    out = inpaint_images(task_run, x0, known, labels=torch.tensor([0, 1, 0, 1, 0, 1]), sampler=sampler,
                         steps=8, progress=False)
    keep = known.bool().expand_as(x0)
    assert torch.equal(to_uint8(out)[keep], to_uint8(x0)[keep])
    assert not torch.equal(to_uint8(out)[~keep], to_uint8(x0)[~keep])  # the hole was painted, not copied


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_hole_takes_the_sign_of_the_known_half(two_point_run, sampler):
    x0 = signs_image()
    known = make_mask(8, (8, 8), mask="right")
    out = inpaint_images(two_point_run, x0, known, sampler=sampler, generator=torch.Generator().manual_seed(0),
                         progress=False)
    assert (out - x0).abs().max() < 0.02


def test_repaint_fills_the_hole_consistently(two_point_run):
    x0 = signs_image()
    known = make_mask(8, (8, 8), mask="top")
    out = inpaint_images(two_point_run, x0, known, resamplings=3, jump_length=4, progress=False,
                         generator=torch.Generator().manual_seed(0))
    assert (out - x0).abs().max() < 0.02


def test_without_replacement_the_hole_is_a_coin_flip(two_point_run):
    # the negative control of the two tests above: plain sampling ignores the known half
    out = two_point_run.sample(8, generator=torch.Generator().manual_seed(0), progress=False)
    assert ((out.mean((1, 2, 3)) > 0) != (signs_image().mean((1, 2, 3)) > 0)).any()


def test_replacement_draws_from_q_and_pastes_at_the_end(task_run):
    d = task_run.diffusion
    x0 = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    known = make_mask(64, (8, 8), mask="left")
    x = torch.randn(64, 1, 8, 8)
    cb = replace_known(d, x0, known, torch.Generator().manual_seed(4))
    s = 7
    out = cb({"x": x, "t_next": s})
    keep = known.bool().expand_as(x)
    a = float(d.alphas_cumprod_64[s])
    z = (out - a**0.5 * x0) / (1 - a) ** 0.5  # should be N(0, 1) on the known pixels (eq. 4)
    assert abs(float(z[keep].mean())) < 0.1 and abs(float(z[keep].std()) - 1) < 0.1
    assert torch.equal(out[~keep], x[~keep])
    final = cb({"x": x, "t_next": -1})
    assert torch.equal(final[keep], x0[keep]) and torch.equal(final[~keep], x[~keep])


@pytest.mark.parametrize("t,s", [(-1, 4), (3, 13), (0, 19)])
def test_renoise_jumps_to_q_of_the_later_step(task_run, t, s):
    # x_t ~ q(x_t | x0) jumped to s must be distributed as q(x_s | x0) = N(sqrt(abar_s) x0, 1 - abar_s)
    betas = torch.linspace(1e-3, 0.3, 20, dtype=torch.float64)  # the tiny recipe's schedule, written out
    abar = torch.cumprod(1 - betas, 0).tolist()
    a_t, a_s = (1.0 if t < 0 else abar[t]), abar[s]
    g = torch.Generator().manual_seed(5)
    x0 = torch.full((100_000, 1, 1, 1), 0.7)
    x_t = a_t**0.5 * x0 + (1 - a_t) ** 0.5 * torch.randn(x0.shape, generator=g)
    x_s = renoise(task_run.diffusion, x_t, t, s, g)
    assert abs(float(x_s.mean()) - a_s**0.5 * 0.7) < 0.02
    assert abs(float(x_s.var()) - (1 - a_s)) < 0.02


def test_jump_schedule_by_hand():
    # n = 6 positions, j = 2, r = 2: jump points at times 0 and 2 (positions 5 and 3), walked out by hand
    assert jump_schedule(6, 2, 2) == [0, 1, 2, 3, 1, 2, 3, 4, 5, 3, 4, 5, 6]
    assert jump_schedule(6, 2, 1) == list(range(7))  # no resampling: straight down
    path = jump_schedule(50, 10, 10)
    moves = np.diff(path)
    assert set(moves.tolist()) == {1, -10} and path[0] == 0 and path[-1] == 50
    assert (moves == 1).sum() == 50 + 9 * 10 * 4  # 4 jump points, each resampled 9 more times


def test_all_known_mask_returns_the_input(task_run, tmp_path):
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    out = inpaint_images(task_run, x0, torch.ones(4, 1, 8, 8), progress=False)
    assert torch.equal(out, x0)
    black = tmp_path / "nothing_to_paint.png"
    Image.new("L", (32, 32), 0).save(black)
    check_task(inpaint, task_run, out_dir=tmp_path / "out", indices=[0, 1], mask_file=str(black))
    grid = np.asarray(Image.open(tmp_path / "out" / "inpaint.png").convert("L"))
    for r in range(2):  # rows: input | masked input | result, 8x8 cells with 2 px padding
        y = 2 + r * 10
        assert np.array_equal(grid[y : y + 8, 2:10], grid[y : y + 8, 22:30])


@pytest.mark.parametrize("options", [
    {"mask": "left"},
    {"mask": "left", "guidance": 1.5, "label": 1, "sampler": "ddim", "steps": 6},
    {"mask": "left", "resamplings": 2, "jump_length": 3, "steps": 10, "guidance": 1.5},
])
def test_task_keeps_the_known_half_in_its_png(task_run, tmp_path, options):
    result = check_task(inpaint, task_run, out_dir=tmp_path, indices=[0, 1, 2], **options)
    assert result.metrics["known_max_error"] == 0.0 and result.metrics["hole_mse"] > 0
    grid = np.asarray(Image.open(tmp_path / "inpaint.png").convert("L"))
    for r in range(3):
        y = 2 + r * 10
        inp, res = grid[y : y + 8, 2:10], grid[y : y + 8, 22:30]
        assert np.array_equal(inp[:, 4:], res[:, 4:])  # "left" repaints columns 0-3, keeps 4-7


def test_repaint_refuses_other_samplers(task_run):
    with pytest.raises(ValueError, match="ancestral"):
        inpaint_images(task_run, torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), resamplings=2, sampler="ddim")


@pytest.mark.parametrize("mask", ["left", "right", "top", "bottom", "centre", "random", "strokes"])
def test_mask_presets(mask):
    known = make_mask(3, (16, 16), mask=mask, fraction=0.25, generator=torch.Generator().manual_seed(0))
    assert known.shape == (3, 1, 16, 16) and set(known.unique().tolist()) == {0.0, 1.0}
    hole = 1 - known
    expected = {"left": 0.5, "right": 0.5, "top": 0.5, "bottom": 0.5, "centre": 0.25, "random": 0.25}
    if mask in expected:
        assert torch.allclose(hole.mean((1, 2, 3)), torch.tensor(expected[mask]))
    else:
        assert (hole.mean((1, 2, 3)) >= 0.25).all()
    if mask == "left":
        assert hole[:, :, :, :8].all() and not hole[:, :, :, 8:].any()
    if mask == "centre":
        assert hole[:, :, 4:12, 4:12].all() and hole.sum() == 3 * 64


def test_mask_file_white_is_the_hole(tmp_path):
    img = np.zeros((32, 32), np.uint8)
    img[:, 16:] = 255  # the right half is white
    Image.fromarray(img).save(tmp_path / "m.png")
    known = make_mask(2, (8, 8), mask_file=str(tmp_path / "m.png"))
    assert known[:, :, :, :4].all() and not known[:, :, :, 4:].any()
    with pytest.raises(FileNotFoundError):
        make_mask(1, (8, 8), mask_file=str(tmp_path / "missing.png"))


def _perturbed_run(tmp_path, **tables):
    """The tiny unconditional recipe with ``tables`` replaced, its output layer perturbed (predictions not all 0)."""
    from gentool.recipe import load_recipe
    from gentool.run import build
    from gentool.testing import tiny_recipe

    data = tiny_recipe(tmp_path, conditional=False)
    for key, table in tables.items():
        data[key] = {**data.get(key, {}), **table}
    run = build(load_recipe(data=data), device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in run.sampling_model.denoiser.conv_out.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return run


def test_repaint_under_zero_terminal_snr_is_finite(tmp_path):
    """Issue 24, defect 2: RePaint's private step divided by sqrt(alpha-bar_T) = 0 (NaN); the toolkit's step takes
    x0 from the v-prediction there."""
    run = _perturbed_run(tmp_path, schedule={"zero_terminal_snr": True}, objective={"prediction": "v"})
    assert float(run.process.alphas_cumprod_64[-1]) == 0.0
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    known = make_mask(4, (8, 8), mask="centre", fraction=0.25)
    out = inpaint_images(run, x0, known, resamplings=3, jump_length=2, steps=10,
                         generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.isfinite(out).all()
    assert torch.equal(out * known, x0 * known)


def test_repaint_takes_the_ancestral_samplers_step_learned_variance_included(tmp_path):
    """Issue 24, defect 2: with r = 1 RePaint's walk is plain replacement inpainting over the ancestral sampler;
    both must give the same images, also for a learned variance (which the old private step ignored)."""
    from gentool_tasks.inpaint import repaint

    run = _perturbed_run(tmp_path, objective={"name": "hybrid"}, denoiser={"learn_sigma": True})
    with torch.no_grad():  # a variance output far from the fixed choices
        run.sampling_model.denoiser.conv_out.bias[1:] = 0.7
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    known = make_mask(4, (8, 8), mask="centre", fraction=0.25)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    walked = repaint(run.denoise_fn(), run.process, x0, known, x_T, steps=8, jump_length=2, resamplings=1,
                     generator=g1, progress=False)
    sampled = run.sample(x_T=x_T, sampler="ancestral", steps=8, generator=g2, progress=False,
                         callback=replace_known(run.process, x0, known, g2))
    torch.testing.assert_close(walked, sampled, rtol=0, atol=0)


def test_the_command_defaults_are_the_recipes_inpainting():
    """Issue 29: `gentool inpaint RUN` with no options gave noisy blocks; its defaults are now the recipe's task."""
    import inspect
    import tomllib
    from pathlib import Path

    recipe = tomllib.loads((Path(__file__).parents[2] / "recipes" / "fashion_mnist.toml").read_text())
    task = next(t for t in recipe["tasks"] if t["name"] == "inpaint")
    params = inspect.signature(gentool.registry().get("task", "inpaint").factory).parameters
    assert params["mask"].default == task["mask"] and params["fraction"].default == task["fraction"]
    assert params["jump_length"].default == task["jump_length"]
    from gentool_tasks.inpaint import DEFAULT_STEPS

    assert DEFAULT_STEPS == task["steps"] and task["resamplings"] == 2  # the default r with the ancestral sampler
