"""The warning for a schedule that leaves signal at t = T (gentool/terminal_snr.py), and where it is shown.

sqrt(alpha-bar_T) is checked against products computed here with math.fsum of
log1p, and for constant betas against the closed form (1 - beta)^(T / 2).
"""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

import gentool_schedules
from gentool.api import run_recipe
from gentool.cli import app
from gentool.terminal_snr import TERMINAL_SIGNAL_LIMIT, terminal_signal, terminal_signal_warning

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def sqrt_abar_T(betas: list[float]) -> float:
    return math.exp(0.5 * math.fsum(math.log1p(-b) for b in betas))


@pytest.mark.parametrize("T, beta", [(20, 0.01), (1000, 0.02), (300, 0.5)])
def test_terminal_signal_is_sqrt_alpha_bar_T(T, beta):
    assert terminal_signal(torch.full((T,), beta, dtype=torch.float64)) == pytest.approx((1 - beta) ** (T / 2), rel=1e-12)
    linear = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]  # Ho et al.'s linear betas
    assert terminal_signal(gentool_schedules.linear(timesteps=T)) == pytest.approx(sqrt_abar_T(linear), rel=1e-12)


def test_the_schedules_of_the_papers_pass_and_short_ones_warn():
    for betas in (gentool_schedules.linear(), gentool_schedules.sigmoid(), gentool_schedules.cosine(),
                  gentool_schedules.linear(timesteps=20, zero_terminal_snr=True)):
        assert terminal_signal_warning(betas) is None
    warning = terminal_signal_warning(gentool_schedules.linear(timesteps=20))  # issue 24: alpha-bar_T about 0.8
    assert warning is not None and "sqrt(alpha-bar_T) = 0.9 " in warning, warning
    for fix in ("more timesteps", "T = 20", "larger betas", "zero_terminal_snr = true"):
        assert fix in warning, warning


@pytest.mark.parametrize("signal, warns", [(0.0098, False), (0.0102, True)])
def test_the_limit_is_sqrt_alpha_bar_T_of_001(signal, warns):
    b = 1 - signal ** (2 / 1000)  # constant betas: sqrt(alpha-bar_T) = (1 - b)^500 = signal
    assert TERMINAL_SIGNAL_LIMIT == 0.01
    assert (terminal_signal_warning(torch.full((1000,), b, dtype=torch.float64)) is not None) == warns


def test_check_warns_and_still_accepts(tiny_recipe):
    """The toy recipe (linear, T = 50) keeps sqrt(alpha-bar_T) = 0.78: a warning on stderr, also with --quiet."""
    result = runner.invoke(app, ["check", str(tiny_recipe), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert f"warning: {tiny_recipe}: schedule (linear): the schedule leaves signal at t = T: sqrt(alpha-bar_T) = 0.78" in text
    assert "zero_terminal_snr" in text
    result = runner.invoke(app, ["check", str(tiny_recipe), "--set", "schedule.timesteps=1000"], catch_exceptions=False)
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output
    assert "sqrt(alpha-bar_T) = 0.0064" in result.stdout  # the summary's schedule row


def test_run_warns_in_its_first_line(tiny_recipe):
    messages: list[str] = []
    run_recipe(tiny_recipe, overrides=["train.steps=1"], run_tasks=False, progress=False, log=messages.append)
    assert messages[0].startswith(f"warning: {tiny_recipe}: schedule (linear): the schedule leaves signal"), messages[:3]
    assert sum("leaves signal" in m for m in messages) == 1
