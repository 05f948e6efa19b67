"""Post-hoc EMA (Karras et al. 2024, EDM2): the power-function EMA against the paper's equations, computed
independently (mpmath integrals), and the reconstruction against an EMA of the same length tracked alongside."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import mpmath
import pytest
import torch
from torch import nn
from typer.testing import CliRunner
from _tiny import build, quiet_train, write_recipe

import gentool
from gentool.cli import app
from gentool.engine import checkpoint as ckpt
from gentool.engine import phema_files
from gentool.engine.phema import PowerEMA, gamma_of, power_beta, profile_inner, sigma_rel_of, solve_coefficients
from gentool.engine.state import recipe_key
from gentool.engine.train import RecipeMismatchError
from gentool.recipe import RecipeError, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
mpmath.mp.dps = 30


def _profile(t, gamma):
    """p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t] (EDM2 eq. 1), in mpmath."""
    t, gamma = mpmath.mpf(t), mpmath.mpf(gamma)
    return lambda tau: (gamma + 1) * tau**gamma / t ** (gamma + 1) if tau <= t else mpmath.mpf(0)


def _sigma_rel_by_integration(gamma: float) -> float:
    """The standard deviation of tau / t under the profile, by quadrature (t = 1)."""
    p = _profile(1, gamma)
    mean = mpmath.quad(lambda u: u * p(u), [0, 1])
    return float(mpmath.sqrt(mpmath.quad(lambda u: (u - mean) ** 2 * p(u), [0, 1])))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 3.0, 6.94, 16.97, 100.0])
def test_sigma_rel_is_the_profiles_relative_standard_deviation_and_gamma_of_inverts_it(gamma):
    sigma_rel = _sigma_rel_by_integration(gamma)
    assert sigma_rel_of(gamma) == pytest.approx(sigma_rel, rel=1e-12)  # eq. 3
    assert gamma_of(sigma_rel) == pytest.approx(gamma, rel=1e-9, abs=1e-9)


def test_the_papers_two_profiles():
    """EDM2 section 3: sigma_rel = 0.05 and 0.10 are gamma = 16.97 and 6.94."""
    assert round(gamma_of(0.05), 2) == 16.97 and round(gamma_of(0.10), 2) == 6.94
    for bad in (0.0, -0.1, 0.29, float("nan")):
        with pytest.raises(ValueError, match="outside"):
            gamma_of(bad)


@pytest.mark.parametrize("t_a, gamma_a, t_b, gamma_b", [
    (100, 6.94, 100, 16.97), (40, 16.97, 100, 6.94), (100, 6.94, 40, 16.97), (7, 0.0, 3, 2.5), (1e6, 3.0, 2e5, 30.0)])
def test_profile_inner_products_match_numerical_integration(t_a, gamma_a, t_b, gamma_b):
    pa, pb = _profile(t_a, gamma_a), _profile(t_b, gamma_b)
    expected = mpmath.quad(lambda tau: pa(tau) * pb(tau), [0, min(t_a, t_b)])
    assert float(profile_inner(t_a, gamma_a, t_b, gamma_b)) == pytest.approx(float(expected), rel=1e-10)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.1, 0.2])
def test_the_tracked_power_ema_of_a_scalar_is_eq1_over_the_piecewise_constant_weights(sigma_rel):
    """After step t the average is (gamma + 1) / t^(gamma + 1) * integral_0^t tau^gamma theta(tau) dtau (eq. 1),
    theta(tau) = theta_k on (k - 1, k]: the update theta_hat <- lerp(theta_hat, theta_t, 1 - beta_t) of eq. 2 with
    beta_t = (1 - 1/t)^(gamma + 1) reproduces it, whatever the average started from."""
    gamma = gamma_of(sigma_rel)
    values = torch.randn(30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scalar = nn.Module()
    scalar.theta = nn.Parameter(torch.tensor(123.0, dtype=torch.float64))  # the start: it never counts
    tracker = PowerEMA(scalar, [sigma_rel])
    for t, value in enumerate(values.tolist(), start=1):
        scalar.theta.data.fill_(value)
        tracker.update(t)
        assert power_beta(gamma, t) == pytest.approx((1 - 1 / t) ** (gamma + 1), rel=1e-15)
        if t in (1, 2, 7, 30):
            p = _profile(t, gamma)
            expected = sum(v * mpmath.quad(p, [k - 1, k]) for k, v in enumerate(values[:t].tolist(), start=1))
            assert tracker.averages[0]["theta"].item() == pytest.approx(float(expected), rel=1e-12, abs=1e-14)


def test_solve_reproduces_a_profile_among_its_inputs_and_reports_a_worse_fit_for_one_outside():
    ts, gammas = [25, 50, 75, 100] * 2, [gamma_of(0.05)] * 4 + [gamma_of(0.1)] * 4
    exact = solve_coefficients(ts, gammas, 100, gamma_of(0.1))
    assert exact.fit_error < 1e-6 and exact.coefficients[-1] == pytest.approx(1, abs=1e-6)
    between = solve_coefficients(ts, gammas, 100, gamma_of(0.07))
    assert 1e-4 < between.fit_error < 0.05 and sum(between.coefficients) == pytest.approx(1)
    # the fit error is || sum_i x_i p_i - p_r || / || p_r ||, here by quadrature
    combined = [_profile(t, g) for t, g in zip(ts, gammas)]
    target = _profile(100, gamma_of(0.07))
    err = mpmath.quad(lambda tau: (sum(x * p(tau) for x, p in zip(between.coefficients, combined)) - target(tau)) ** 2,
                      [0, 25, 50, 75, 100])
    norm = mpmath.quad(lambda tau: target(tau) ** 2, [0, 100])
    assert between.fit_error == pytest.approx(float(mpmath.sqrt(err / norm)), rel=1e-6)


def _fit_bound(fit_error: float, sigma_rel: float, t: int, history: torch.Tensor, direct: torch.Tensor) -> float:
    """|| sum_k delta_k theta_k || <= || delta || sqrt(sum_k || theta_k - c ||^2) (Cauchy-Schwarz; sum_k delta_k = 0,
    so any c), where delta_k, the error of the fitted profile integrated over step k, has || delta || <=
    fit_error * || p_r || and || p_r ||^2 = (gamma + 1)^2 / ((2 gamma + 1) t)."""
    gamma = gamma_of(sigma_rel)
    p_norm = ((gamma + 1) ** 2 / ((2 * gamma + 1) * t)) ** 0.5
    return fit_error * p_norm * float((history.double() - direct.double()).square().sum().sqrt())


def test_the_reconstruction_matches_an_ema_of_that_length_tracked_alongside(tmp_path):
    """Noisy descent of 400 steps in 500 weights; snapshots of sigma_rel 0.05 and 0.1 every 20 steps rebuild the
    EMA of sigma_rel 0.07 tracked beside them (measured: profile fit 0.25%, weights within 0.03% of the distance
    from the online weights to that EMA)."""
    g = torch.Generator().manual_seed(0)
    net, optimum = nn.Linear(500, 1, bias=False), torch.randn(500, generator=g)
    nn.init.zeros_(net.weight)
    tracker = PowerEMA(net, [0.05, 0.1, 0.07])
    history = []
    with torch.no_grad():
        for t in range(1, 401):
            net.weight[0] += 0.02 * (optimum - net.weight[0]) + 0.05 * torch.randn(500, generator=g)
            history.append(net.weight[0].clone())
            tracker.update(t)
            if t % 20 == 0:
                phema_files.write_snapshots(tracker, tmp_path)
    result = phema_files.reconstruct(tmp_path, 0.07, using=[0.05, 0.1])
    assert result.step == 400 and len(result.inputs) == 40
    rebuilt = ckpt.load_checkpoint(result.path)["model"]["weight"][0]
    direct, online = tracker.averages[2]["weight"][0], net.weight[0].detach()
    error = float((rebuilt - direct).norm() / (online - direct).norm())
    assert result.solution.fit_error < 0.005 and error < 0.002, (result.solution.fit_error, error)
    bound = _fit_bound(result.solution.fit_error, 0.07, 400, torch.stack(history), direct)
    assert float((rebuilt - direct).norm()) <= bound * 1.01 + 1e-5
    # a tracked length is rebuilt from its own snapshot
    own = phema_files.reconstruct(tmp_path, 0.07, out=tmp_path / "own.pt")
    assert own.solution.fit_error < 1e-6
    assert torch.allclose(ckpt.load_checkpoint(own.path)["model"]["weight"][0], direct, atol=1e-5)


def _phema_recipe(tmp_path: Path, name: str = "ph", steps: int = 12, checkpoint_every: int = 4) -> Path:
    return write_recipe(tmp_path, name=name, steps=steps, checkpoint_every=checkpoint_every,
                        train="phema_sigma_rels = [0.05, 0.1, 0.07]\nphema_every = 2")


@pytest.fixture(scope="module")
def phema_run(tmp_path_factory, one_thread):
    """The toy recipe trained 12 steps tracking sigma_rel 0.05, 0.1 and 0.07, snapshots every 2 steps."""
    run = build(_phema_recipe(tmp_path_factory.mktemp("phema")))
    quiet_train(run)
    return run


def test_gentool_ema_rebuilds_a_trained_runs_ema_into_a_checkpoint_sample_loads(phema_run, tmp_path):
    run = phema_run
    snapshots = phema_files.list_snapshots(run.run_dir)
    assert [(s.step, s.sigma_rel) for s in snapshots] == [(t, s) for t in range(2, 13, 2) for s in (0.05, 0.07, 0.1)]
    out = tmp_path / "rebuilt.pt"
    result = CliRunner().invoke(app, ["ema", str(run.run_dir), "--sigma-rel", "0.07", "--using", "0.05,0.1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "profile fit: relative L2 error" in result.output and str(out) in " ".join(result.output.split())
    loaded = gentool.load_run(out, device="cpu")  # a checkpoint outside its run: its own recipe
    assert loaded.step == 12
    direct = phema_files.load_snapshot_weights(phema_files.snapshot_path(run.run_dir, 0.07, 12))
    rebuilt, online = loaded.ema.state_dict(), run.model.state_dict()
    diff = sum(float((rebuilt[k] - direct[k]).square().sum()) for k in direct) ** 0.5
    spread = sum(float((online[k] - direct[k]).square().sum()) for k in direct) ** 0.5
    # measured: 1.7% of the online weights' distance to that EMA (6 snapshots each of 0.05 and 0.1, fit 2.1%)
    assert diff / spread < 0.05, diff / spread
    sampled = CliRunner().invoke(app, ["sample", str(out), "--n", "1", "--out", str(tmp_path / "samples")])
    assert sampled.exit_code == 0, sampled.output
    assert (tmp_path / "samples" / "grid.png").exists()
    # by default it goes into the run's checkpoints/, beside (never among) the training checkpoints
    default = phema_files.reconstruct(run.run_dir, 0.07).path
    assert default == run.run_dir / "checkpoints" / "phema-0.07-step_00000012.pt"
    assert gentool.load_run(default, device="cpu").step == 12
    assert default not in ckpt.list_checkpoints(run.run_dir)


def test_training_with_phema_on_resumes_bit_identically(tmp_path):
    straight = build(_phema_recipe(tmp_path, "straight", steps=4, checkpoint_every=2))
    quiet_train(straight)
    recipe = _phema_recipe(tmp_path, "resumed", steps=4, checkpoint_every=2)
    quiet_train(build(recipe, "train.steps=2"))
    result, _ = quiet_train(build(recipe))
    assert result.resumed_from == 2 and result.step == 4
    a = ckpt.load_checkpoint(straight.run_dir / "checkpoints" / "step_00000004.pt")["phema"]
    b = ckpt.load_checkpoint(tmp_path / "runs" / "resumed" / "checkpoints" / "step_00000004.pt")["phema"]
    assert a["sigma_rels"] == b["sigma_rels"] == [0.05, 0.1, 0.07] and a["step"] == b["step"] == 4
    for mine, theirs in zip(a["averages"], b["averages"]):
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    for name in ("phema-0.05-step_00000004.safetensors", "phema-0.07-step_00000004.safetensors"):
        mine = phema_files.load_snapshot_weights(straight.run_dir / "checkpoints" / "phema" / name)
        theirs = phema_files.load_snapshot_weights(tmp_path / "runs" / "resumed" / "checkpoints" / "phema" / name)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_phema_off_keeps_the_recipe_key_and_cannot_be_switched_on_by_resuming(trained_toy_copy):
    key = recipe_key(load_recipe(trained_toy_copy))
    assert not any(k.startswith("phema") for k in key["train"])  # old runs' fingerprints stay what they were
    assert "phema_sigma_rels" in recipe_key(load_recipe(trained_toy_copy, overrides=["train.phema_sigma_rels=[0.1]"]))[
        "train"]
    with pytest.raises(RecipeMismatchError, match=r"train\.phema_sigma_rels: '\(absent\)' -> \[0\.1\]"):
        quiet_train(build(trained_toy_copy, "train.phema_sigma_rels=[0.1]", "train.steps=3"))
    result, log = quiet_train(build(trained_toy_copy, "train.phema_sigma_rels=[0.1]", "train.steps=3"), force=True)
    assert result.step == 3 and any("holds no post-hoc EMA" in m and "from the weights of step 2" in m for m in log)


@pytest.mark.parametrize("value, what", [("[0.5]", "each sigma_rel must be in"), ("[0.1, 0.1]", "appear once"),
                                         ("[0.0]", "each sigma_rel must be in")])
def test_bad_sigma_rels_are_refused_with_the_key(trained_toy_copy, value, what):
    with pytest.raises(RecipeError, match="phema_sigma_rels") as info:
        load_recipe(trained_toy_copy, overrides=[f"train.phema_sigma_rels={value}"])
    assert what in str(info.value)


def test_a_failed_snapshot_write_leaves_no_partial_file(tmp_path, monkeypatch):
    net = nn.Linear(3, 2)
    tracker = PowerEMA(net, [0.05])
    tracker.update(1)
    first = phema_files.write_snapshots(tracker, tmp_path)[0]
    before = first.read_bytes()
    tracker.update(2)

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # every byte written, then the disk refuses the flush
    with pytest.raises(OSError, match="No space left"):
        phema_files.write_snapshots(tracker, tmp_path)
    monkeypatch.undo()
    folder = phema_files.snapshot_dir(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [first.name]  # no step-2 file, no temporary file
    assert first.read_bytes() == before
    # a writer killed mid-write leaves its temporary file; resuming removes it (its process is gone)
    stale = folder / f".{first.name}.abc.{2**22 + 1}.tmp"
    stale.write_bytes(before[:10])
    assert ckpt.clean_partial(tmp_path) == [stale] and not stale.exists()
    assert [s.step for s in phema_files.list_snapshots(tmp_path)] == [1]


def test_gentool_ema_refuses_bad_input_in_one_line(phema_run, tmp_path):
    for args, message in [(["--sigma-rel", "0.5"], "outside (0, 0.2887]"), (["--sigma-rel", "0.1", "--step", "3"],
                          "no snapshot at that step"), (["--sigma-rel", "0.1", "--using", "0.2"], "not tracked"),
                          (["--sigma-rel", "0.1", "--using", "x"], "separated by commas")]:
        result = CliRunner().invoke(app, ["ema", str(phema_run.run_dir), *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    result = CliRunner().invoke(app, ["ema", str(tmp_path), "--sigma-rel", "0.1"])
    assert result.exit_code == 2 and "no post-hoc EMA snapshots" in result.output
