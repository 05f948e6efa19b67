"""Recipe checks of the objective against the schedule and the denoiser (gentool check and gentool run).

Zero terminal SNR (Lin et al. 2024) with an eps prediction is refused, v and
x0 accepted; a learned-variance objective needs a 2C-output denoiser.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gentool.cli import app

runner = CliRunner()


def recipe(tmp_path, *, objective: str, schedule: str = "", denoiser: str = "") -> str:
    path = tmp_path / "r.toml"
    path.write_text(f"""
[run]
name = "r"
output_dir = "{(tmp_path / 'runs').as_posix()}"
device = "cpu"

[data]
name = "toy"
n = 8
image_size = 8

[schedule]
name = "linear"
timesteps = 20
{schedule}

[objective]
{objective}

[denoiser]
name = "unet"
in_channels = 1
image_size = 8
channels = 32
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = []
class_cond = false
{denoiser}

[train]
steps = 1
batch_size = 4
""", encoding="utf-8")
    return str(path)


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", ["check", "run"])
def test_zero_terminal_snr_refuses_eps_prediction(tmp_path, command):
    path = recipe(tmp_path, objective='name = "ddpm"', schedule="zero_terminal_snr = true")
    result = runner.invoke(app, [command, path])
    out = one_line(result.output)
    assert result.exit_code == 2, out
    assert "objective.prediction" in out and "zero-terminal-SNR" in out and '"v"' in out and "Traceback" not in out
    assert not (tmp_path / "runs" / "r" / "checkpoints").exists()


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_zero_terminal_snr_accepts_v_and_x0(tmp_path, prediction):
    path = recipe(tmp_path, objective=f'name = "ddpm"\nprediction = "{prediction}"', schedule="zero_terminal_snr = true")
    result = runner.invoke(app, ["check", path])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("objective, denoiser, words", [
    ('name = "hybrid"', "", "set learn_sigma = true"),
    ('name = "ddpm"', "learn_sigma = true", "does not train"),
])
def test_learned_variance_needs_both_halves(tmp_path, objective, denoiser, words):
    result = runner.invoke(app, ["check", recipe(tmp_path, objective=objective, denoiser=denoiser)])
    out = one_line(result.output)
    assert result.exit_code == 2 and "denoiser" in out and words in out and "Traceback" not in out, out
    ok = runner.invoke(app, ["check", recipe(tmp_path, objective='name = "hybrid"', denoiser="learn_sigma = true")])
    assert ok.exit_code == 0, ok.output
