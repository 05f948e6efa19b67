"""The ``variations`` task (SDEdit): t = 0 returns the input, t maps to the right step, t moves the result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gentool.testing import check_task

from gentool import Diffusion
from gentool_tasks.variations import noised_step, variations, vary


pytestmark = pytest.mark.usefixtures("one_thread")
# task_run (conftest): an untrained class-conditional tiny run (T = 20) with a perturbed output layer


def test_t_zero_returns_the_input(task_run):
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = vary(task_run, x0, 0.0, n=2, progress=False)
    assert torch.equal(out, x0.repeat_interleave(2, 0))


def test_task_with_t_zero_writes_the_input(task_run, tmp_path):
    result = check_task(variations, task_run, out_dir=tmp_path, t=0.0, n=3, indices=[0, 1])
    assert result.metrics["mse_to_input"] == 0.0
    grid = np.asarray(Image.open(tmp_path / "variations.png").convert("L"))
    for r in range(2):  # each row: the input, then 3 variations; 8x8 cells, 2 px padding
        y = 2 + r * 10
        cells = [grid[y : y + 8, 2 + c * 10 : 10 + c * 10] for c in range(4)]
        assert all(np.array_equal(cells[0], c) for c in cells[1:])


def test_fraction_to_timestep():
    # round(t * T) forward steps; gentool's 0-based step is one less (-1: no noise)
    T = 20
    chain = Diffusion(torch.linspace(1e-4, 0.02, T, dtype=torch.float64))
    assert noised_step(0.0, chain) == -1
    assert noised_step(0.02, chain) == -1  # 0.4 steps round to none
    assert noised_step(0.05, chain) == 0  # one step: x_1 of the paper
    assert noised_step(0.5, chain) == 9
    assert noised_step(1.0, chain) == T - 1
    with pytest.raises(ValueError, match="fraction"):
        noised_step(1.5, chain)


def test_sampling_starts_at_the_noised_step(task_run, monkeypatch):
    seen = {}
    original = task_run.sample

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(task_run, "sample", spy)
    x0 = torch.zeros(2, 1, 8, 8)
    vary(task_run, x0, 0.5, n=1, progress=False, generator=torch.Generator().manual_seed(0))
    assert seen["options"].t_start == 9
    # x_T handed to the sampler is q(x_9 | x0 = 0): pure noise scaled by sqrt(1 - abar_9)
    abar = torch.cumprod(1 - torch.linspace(1e-3, 0.3, 20, dtype=torch.float64), 0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(seen["x_T"], (1 - abar[9]).sqrt().float() * noise, atol=1e-6)


def test_larger_t_strays_further(task_run):
    x0 = torch.stack([task_run.dataset("test")[i][0] for i in range(4)])
    far = {}
    for t in (0.05, 1.0):
        out = vary(task_run, x0, t, n=2, progress=False, generator=torch.Generator().manual_seed(1))
        far[t] = float(((out - x0.repeat_interleave(2, 0)) ** 2).mean())
        assert not torch.equal(out[0::2], out[1::2])  # the two variations of an input differ
    assert 0 < far[0.05] < 0.05 < far[1.0]


def test_n_must_be_positive(task_run, tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        variations(task_run, tmp_path, n=0)


@pytest.mark.parametrize("index", [-1, 10_000])
def test_indices_out_of_range_are_rejected(task_run, tmp_path, index):
    # a negative index used to wrap to the last image while a too-large one was rejected
    n = len(task_run.dataset("test"))
    with pytest.raises(ValueError, match=rf"indices must be in 0\.\.{n - 1} .*got {index}$"):
        variations(task_run, tmp_path, indices=[index])
