"""Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself", eq. 2):
D = D_bad + w_paper (D_good - D_bad), with gentool's w = w_paper - 1 (the eps form of classifier-free guidance)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import gentool
from gentool import SamplingOptions, UsageError, autoguidance, plan
from gentool.autoguidance import autoguided
from gentool.parameterisation import Denoised
from gentool.testing import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two unconditional tiny runs of one recipe (one process) whose networks differ: good and bad."""
    good = tiny_run(tmp_path_factory.mktemp("good"), conditional=False, perturb=0.2)
    bad = tiny_run(tmp_path_factory.mktemp("bad"), conditional=False, perturb=0.2)
    with torch.no_grad():
        for p in bad.ema.denoiser.conv_out.parameters():
            p.mul_(-0.5).add_(0.01)
    return good, bad


def x0_by_hand(run, x, t: int) -> torch.Tensor:
    """The EMA network's x0 at step t of the chain, from its noise prediction: (x - sqrt(1 - abar) eps) / sqrt(abar)."""
    abar = run.process.alphas_cumprod_64[t]
    with torch.no_grad():
        eps = run.ema.denoiser(x, torch.full((x.shape[0],), t, dtype=torch.long)).double()
    return ((x.double() - (1 - abar).sqrt() * eps) / abar.sqrt()).float()


def test_the_mix_is_eq2_with_w_paper_one_more_than_w():
    good = Denoised(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 2.0]))
    bad = Denoised(torch.tensor([0.25, 1.0, 0.5]), torch.tensor([1.0, 1.0, -1.0]))
    out = autoguided(good, bad, 1.5)  # w_paper = 2.5: D_bad + 2.5 (D_good - D_bad), by hand
    torch.testing.assert_close(out.x0, torch.tensor([0.25 + 2.5 * 0.75, 1.0 + 2.5 * -3.0, 0.5]))
    torch.testing.assert_close(out.eps, torch.tensor([1.0 - 2.5, 1.0, -1.0 + 2.5 * 3.0]))


@pytest.mark.parametrize("w", [0.5, 2.0])
def test_the_guided_denoiser_is_the_papers_formula_on_the_two_networks(pair, w):
    good, bad = pair
    x, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)), 7
    d_good, d_bad = x0_by_hand(good, x, t), x0_by_hand(bad, x, t)
    assert (d_good - d_bad).abs().max() > 1e-2  # the two models differ
    denoise = plan(good, SamplingOptions(guide_with=bad, guidance=w)).denoise
    with torch.no_grad():
        out = denoise(x, t)
    torch.testing.assert_close(out.x0, d_bad + (1 + w) * (d_good - d_bad), rtol=1e-4, atol=1e-4)
    abar = good.process.alphas_cumprod_64[t]  # and eps follows: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
    torch.testing.assert_close(out.eps.double(), (x.double() - abar.sqrt() * out.x0.double()) / (1 - abar).sqrt(),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmpp_2m"])
def test_guided_by_itself_it_is_bit_identical_to_unguided_sampling(pair, sampler):
    good, _ = pair
    plain = good.sample(3, sampler=sampler, steps=4, seed=5, progress=False)
    guided = good.sample(3, sampler=sampler, steps=4, seed=5, progress=False, guide_with=good, guidance=3.0)
    assert torch.equal(plain, guided)


def test_the_interval_guides_only_inside_it_and_calls_the_bad_model_only_there(pair):
    good, bad = pair
    calls = []
    hook = bad.ema.denoiser.register_forward_hook(lambda m, args, out: calls.append(int(args[1][0])))
    try:
        sigmas = {t: float(((1 - good.process.alphas_cumprod_64[t]) / good.process.alphas_cumprod_64[t]).sqrt())
                  for t in (2, 7, 19)}
        lo, hi = sigmas[2] * 1.01, sigmas[19] * 0.99  # Karras sigma = sigma / alpha: only t = 7 lies inside
        guided = plan(good, SamplingOptions(guide_with=bad, guidance=1.0, guidance_interval=(lo, hi))).denoise
        plain = plan(good, SamplingOptions()).denoise
        x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            for t in (2, 19):
                assert torch.equal(guided(x, t).x0, plain(x, t).x0)
            assert calls == []
            inside = guided(x, 7).x0
        assert calls == [7]
        torch.testing.assert_close(inside, 2 * x0_by_hand(good, x, 7) - x0_by_hand(bad, x, 7), rtol=1e-4, atol=1e-4)
    finally:
        hook.remove()


def test_another_schedule_is_refused_naming_both(pair, tmp_path):
    good, _ = pair
    other = tiny_run(tmp_path, conditional=False, timesteps=30)
    with pytest.raises(UsageError) as info:
        plan(good, SamplingOptions(guide_with=other, guidance=1.0))
    message = str(info.value)
    assert "\n" not in message and "timesteps=20" in message and "timesteps=30" in message


def test_conditioning_must_match_and_cfg_stays_refused_for_an_unconditional_model(pair, tmp_path):
    good, _ = pair
    conditional = tiny_run(tmp_path, conditional=True)
    with pytest.raises(UsageError, match="unconditional.*classes"):
        plan(good, SamplingOptions(guide_with=conditional, guidance=1.0))
    with pytest.raises(UsageError, match="needs a class-conditional model"):
        plan(good, SamplingOptions(guidance=1.0))
    with pytest.raises(UsageError, match="needs the weaker model"):
        plan(good, SamplingOptions(guidance_kind="auto", guidance=1.0))
    with pytest.raises(UsageError, match="not valid: choose cfg"):
        plan(good, SamplingOptions(guidance_kind="bad", guide_with=good))
    with pytest.raises(UsageError, match="CFG rescale"):
        plan(good, SamplingOptions(guide_with=good, guidance=1.0, guidance_rescale=0.7))


def test_a_conditional_model_is_guided_with_its_labels_given_to_both(tmp_path):
    good = tiny_run(tmp_path / "g", conditional=True, perturb=0.2)
    bad = tiny_run(tmp_path / "b", conditional=True, perturb=0.05)
    labels = torch.tensor([0, 1])
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)), 5
    with torch.no_grad():
        d_good = plan(good, SamplingOptions(labels=labels, guidance=0.0)).denoise(x, t).x0
        d_bad = plan(bad, SamplingOptions(labels=labels, guidance=0.0)).denoise(x, t).x0
        out = plan(good, SamplingOptions(labels=labels, guide_with=bad, guidance=1.0)).denoise(x, t).x0
    torch.testing.assert_close(out, d_bad + 2.0 * (d_good - d_bad), rtol=1e-5, atol=1e-5)


def test_an_earlier_checkpoint_guides_from_the_command_line(trained_toy_copy, tmp_path):
    """``gentool sample RUN --guide-with CHECKPOINT -w 1``; guided by the run's own checkpoint it equals plain."""
    from gentool.cli import app

    run_dir = tmp_path / "runs" / "toy"
    checkpoint = run_dir / "checkpoints" / "step_00000002.pt"
    runner = CliRunner()
    common = ["sample", str(run_dir), "--n", "2", "--steps", "3", "--grid-only", "--classes", "1"]
    plain = runner.invoke(app, [*common, "--out", str(tmp_path / "plain")], catch_exceptions=False)
    guided = runner.invoke(app, [*common, "--guide-with", str(checkpoint), "-w", "1", "--out", str(tmp_path / "g")],
                           catch_exceptions=False)
    assert plain.exit_code == 0 and guided.exit_code == 0, guided.output
    assert "autoguided" in guided.output
    assert (tmp_path / "plain" / "grid.png").read_bytes() == (tmp_path / "g" / "grid.png").read_bytes()
    run = gentool.load_run(run_dir)
    autoguidance._cache.clear()
    state = torch.get_rng_state()
    x = run.sample(2, steps=3, labels=[1, 1], guide_with=str(checkpoint), guidance=1.0, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # loading the guide left torch's global generator alone
    assert torch.equal(x, run.sample(2, steps=3, labels=[1, 1], progress=False))


def test_a_task_takes_guide_with_among_its_sampling_options(pair, tmp_path):
    """Every sampling task has ``guide_with`` (gentool.SAMPLING_OPTIONS): the sample task guided by its own
    run is the unguided task, image for image; guided by the bad model it differs."""
    from gentool import ComponentSpec

    good, bad = pair
    plain = good.run_task(ComponentSpec("sample", {"n": 2, "steps": 3, "save_individual": False}), tmp_path / "p")
    same = good.run_task(ComponentSpec("sample", {"n": 2, "steps": 3, "save_individual": False, "guide_with": good,
                                                  "guidance": 2.0}), tmp_path / "s")
    other = good.run_task(ComponentSpec("sample", {"n": 2, "steps": 3, "save_individual": False, "guide_with": bad,
                                                   "guidance": 2.0}), tmp_path / "o")
    assert plain.files[0].read_bytes() == same.files[0].read_bytes() != other.files[0].read_bytes()
