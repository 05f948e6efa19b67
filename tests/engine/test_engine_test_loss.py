"""The test-split loss at fixed timesteps against closed forms, and its fixed noise."""

from __future__ import annotations

import pytest
import torch
from _tiny import build, write_recipe

from gentool.engine import test_loss as tl  # a module import: pytest must not collect test_losses

pytestmark = pytest.mark.usefixtures("one_thread")

TWO_POINTS = ["data.kind=\"two_points\""]


def test_a_zero_x0_predictor_has_loss_one_quarter_on_two_points(tmp_path):
    # an untrained U-Net outputs exactly 0 (zero-initialised output layer); predicting x0 = 0
    # for images that are -0.5 or +0.5 everywhere costs (0.5)^2 = 0.25 at every t, whatever the noise
    run = build(write_recipe(tmp_path), *TWO_POINTS, "denoiser.prediction=\"x0\"")
    losses = tl.test_losses(run, [0, 7, 49], max_batches=None)
    assert list(losses) == [0, 7, 49]
    for value in losses.values():
        assert value == pytest.approx(0.25, abs=1e-7)


def test_a_zero_eps_predictor_costs_the_mean_squared_fixed_noise(tmp_path):
    run = build(write_recipe(tmp_path), *TWO_POINTS)
    losses = tl.test_losses(run, [3, 30], max_batches=2, batch_size=16, seed=5)
    # the documented noise: one CPU generator seeded with `seed`, drawn per batch, then per t
    g = torch.Generator().manual_seed(5)
    expected = {3: 0.0, 30: 0.0}
    for _ in range(2):
        for t in (3, 30):
            expected[t] += float(torch.randn((16, 1, 8, 8), generator=g).square().sum())
    for t in (3, 30):
        assert losses[t] == pytest.approx(expected[t] / (2 * 16 * 64), rel=1e-5)
        assert losses[t] == pytest.approx(1.0, abs=0.1)  # E|eps|^2 = 1


def test_the_same_weights_give_the_same_numbers_and_no_global_rng_is_used(tmp_path):
    run = build(write_recipe(tmp_path))
    with torch.no_grad():
        for p in run.model.parameters():  # a non-trivial network
            p.add_(0.05 * torch.randn_like(p))
    before = torch.get_rng_state()
    a = tl.test_losses(run, [5, 25], max_batches=1, model=run.model)
    b = tl.test_losses(run, [5, 25], max_batches=1, model=run.model)
    assert a == b and a[5] != a[25]
    assert torch.equal(before, torch.get_rng_state())
    assert run.model.training  # its mode is put back


def test_timesteps_at_or_beyond_T_are_clipped_with_a_note(tmp_path):
    run = build(write_recipe(tmp_path))
    with pytest.warns(UserWarning, match=r"\[100, 900\] are not below T = 50"):
        losses = tl.test_losses(run, [10, 100, 900], max_batches=1)
    assert list(losses) == [10, 49]
    assert tl.resolve_timesteps([5, 5, 60], 50) == ([5, 49], tl.resolve_timesteps([60], 50)[1])
    with pytest.raises(ValueError, match="must not be negative"):
        tl.resolve_timesteps([-1], 50)


def test_a_conditional_model_sees_the_test_labels(tmp_path):
    run = build(write_recipe(tmp_path, class_cond=True))
    seen = []
    run.ema.conditioner.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    tl.test_losses(run, [1], max_batches=1, batch_size=8)
    labels = torch.tensor([run.dataset("test")[i][1] for i in range(8)])  # the first 8, in order
    assert torch.equal(seen[0].cpu(), labels)
