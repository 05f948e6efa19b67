"""The example plugin's own tests: gentool's contract checks, plus one closed form."""

import torch
from gentool.testing import check_sampler, check_schedule

from gentool_example import heun, quadratic


def test_quadratic_is_a_valid_schedule():
    check_schedule(quadratic)
    check_schedule(quadratic, timesteps=10, beta_start=0.01, beta_end=0.04)


def test_quadratic_square_roots_are_evenly_spaced():
    betas = quadratic(timesteps=3, beta_start=0.01, beta_end=0.09)
    torch.testing.assert_close(betas, torch.tensor([0.01, 0.04, 0.09], dtype=torch.float64))


def test_heun_is_a_valid_sampler():
    check_sampler(heun)
    check_sampler(heun, second_order=False)
