"""The example plugin's own tests: gentool's contract checks, plus closed forms."""

import math

import torch
from gentool.testing import (check_command, check_logger, check_objective, check_sampler, check_schedule,
                             reference_diffusion)

from gentool_example import heun, quadratic
from gentool_example.commands import quadratic_betas
from gentool_example.csv_logger import csv_logger
from gentool_example.pseudo_huber import pseudo_huber


def test_quadratic_is_a_valid_schedule():
    check_schedule(quadratic)
    check_schedule(quadratic, timesteps=10, beta_start=0.01, beta_end=0.04)


def test_quadratic_square_roots_are_evenly_spaced():
    betas = quadratic(timesteps=3, beta_start=0.01, beta_end=0.09)
    torch.testing.assert_close(betas, torch.tensor([0.01, 0.04, 0.09], dtype=torch.float64))


def test_heun_is_a_valid_sampler():
    check_sampler(heun)
    check_sampler(heun, second_order=False)


def test_pseudo_huber_is_a_valid_objective():
    for prediction in ("eps", "x0", "v"):
        check_objective(pseudo_huber, prediction=prediction)


def test_pseudo_huber_is_the_papers_formula():
    diffusion, x0 = reference_diffusion(), torch.zeros(2, 1, 2, 2)
    noise = torch.tensor([3.0, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]).reshape(2, 1, 2, 2)
    zero = lambda x_t, t, labels: torch.zeros_like(x_t)  # the error is the noise itself
    loss, _ = pseudo_huber(c=1.0).loss(zero, diffusion, x0, None, torch.tensor([5, 7]), noise)
    torch.testing.assert_close(loss, torch.tensor([math.sqrt(25 + 1) - 1, math.sqrt(4 + 1) - 1]))
    c = 0.00054 * math.sqrt(4)  # d = 4 values per image
    loss, _ = pseudo_huber().loss(zero, diffusion, x0, None, torch.tensor([5, 7]), noise)
    torch.testing.assert_close(loss, torch.tensor([math.sqrt(25 + c * c) - c, math.sqrt(4 + c * c) - c]))


def test_csv_logger_and_command():
    check_logger(csv_logger)
    check_command("quadratic-betas", quadratic_betas)
