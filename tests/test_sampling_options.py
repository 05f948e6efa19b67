"""One rule for the labels and the guidance weight of every sampling call (gentool.sampling.resolve_sampling).

It is used by Run.sample, Run.eps_fn (so every task), ``gentool sample``,
``gentool eval`` and the task commands; a recipe with guidance but no
conditioner is refused by check, run and loading alike.
"""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from gentool.cli import app
from gentool.errors import UsageError
from gentool.evaluation.evaluate import sampler_settings
from gentool.recipe import ComponentSpec, RecipeError, load_recipe
from gentool.run import build, validate
from gentool.sampling import resolve_sampling
from gentool.testing import tiny_recipe, tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    run = tiny_run(tmp_path_factory.mktemp("cond"), conditional=True)
    run.recipe.sampler.guidance = 1.5  # the recipe's default w
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # no zero-initialised layer left, so a label changes the prediction
        for model in filter(None, (run.model, run.ema)):
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return run


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("uncond"), conditional=False)


def test_no_guidance_means_the_recipe_s(conditional):
    labels, w = resolve_sampling(conditional.model, [1, 0], None, default=1.5)
    assert w == 1.5 and labels.dtype == torch.int64 and labels.tolist() == [1, 0]
    assert resolve_sampling(conditional.model, [1], 0.0, default=1.5)[1] == 0.0  # an explicit 0 wins
    assert conditional.sampling_inputs([1], None)[1] == 1.5


@pytest.mark.parametrize("w", [math.nan, math.inf, -math.inf])
def test_a_non_finite_guidance_is_refused(conditional, w):
    with pytest.raises(UsageError, match="expected a finite number"):
        resolve_sampling(conditional.model, [1], w, default=0.0)


def test_an_unconditional_model_refuses_guidance_and_labels(unconditional):
    with pytest.raises(UsageError, match=r"guidance w = 2 needs a class-conditional model"):
        resolve_sampling(unconditional.model, None, 2.0, default=0.0)
    with pytest.raises(UsageError, match="class labels given, but the model is unconditional"):
        resolve_sampling(unconditional.model, [0], 0.0, default=0.0)
    assert resolve_sampling(unconditional.model, None, None, default=0.0) == (None, 0.0)
    with pytest.raises(UsageError, match="needs a class-conditional model"):  # the same rule in Run.sample
        unconditional.sample(1, guidance=1.0, steps=2, progress=False)


def test_a_conditional_model_without_labels_is_sampled_unguided(conditional):
    assert resolve_sampling(conditional.model, None, 3.0, default=1.5) == (None, 0.0)


def test_a_bad_label_is_refused(conditional):
    with pytest.raises(ValueError, match=r"class labels must be in 0\.\.1"):
        resolve_sampling(conditional.model, [2], None, default=0.0)


def test_run_eps_fn_guides_with_the_recipe_s_weight(conditional):
    """eps~ = (1 + w) eps(x, c) - w eps(x, null) (Ho and Salimans 2022, eq. 6) with w from the recipe."""
    model, diff = conditional.sampling_model.eval(), conditional.diffusion
    x, t, labels = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 17]), torch.tensor([1, 0])
    with torch.no_grad():
        eps_c = model(x, t, labels).float()  # the U-Net predicts eps
        eps_u = model(x, t, torch.full_like(labels, -1)).float()
        got = conditional.eps_fn(labels, fast=False)(x, t)
    assert not torch.allclose(eps_c, eps_u, atol=1e-3)  # the labels matter, so w is seen
    torch.testing.assert_close(got, 2.5 * eps_c - 1.5 * eps_u, rtol=1e-4, atol=1e-5)


def test_every_task_follows_the_rule(unconditional, tmp_path):
    with pytest.raises(UsageError, match="needs a class-conditional model"):
        unconditional.run_task(ComponentSpec("sample", {"n": 1, "guidance": 1.0, "steps": 2}), tmp_path)


def test_eval_follows_the_rule(conditional, unconditional):
    from gentool.config import EvalConfig

    assert sampler_settings(conditional, EvalConfig(), None)["guidance"] == 1.5
    assert sampler_settings(unconditional, EvalConfig(), None)["guidance"] == 0.0
    with pytest.raises(UsageError, match="needs a class-conditional model"):  # was silently 0
        sampler_settings(unconditional, EvalConfig(), 2.0)


def test_a_recipe_with_guidance_needs_a_conditioner(tmp_path):
    data = tiny_recipe(tmp_path, conditional=False)
    data["sampler"] = {"guidance": 2.0}
    recipe = load_recipe(data=data)
    for check in (validate, build):
        with pytest.raises(RecipeError, match=r"sampler\.guidance: 2 needs a class-conditional model, but the "
                                              r"recipe has no \[conditioner\]"):
            check(recipe)
    data["sampler"] = {"guidance": 2.0}
    conditional = tiny_recipe(tmp_path, conditional=True)
    conditional["sampler"] = {"guidance": 2.0}
    validate(load_recipe(data=conditional))  # fine with one


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_recipe_refuses_a_non_finite_guidance(tmp_path, value):
    data = tiny_recipe(tmp_path, conditional=True)
    with pytest.raises(RecipeError, match=r"sampler\.guidance: .* is not valid: expected a finite number"):
        load_recipe(data=data, overrides=[f"sampler.guidance={value}"])


def test_gentool_check_refuses_guidance_without_a_conditioner(tmp_path):
    import tomli_w

    data = tiny_recipe(tmp_path, conditional=False)
    data["sampler"] = {"guidance": 1.0}
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2, result.output
    assert "sampler.guidance: 1 needs a class-conditional model" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("w", ["nan", "inf"])
def test_gentool_sample_refuses_a_non_finite_guidance(trained_toy, tmp_path, w):
    result = CliRunner().invoke(app, ["sample", str(trained_toy.run_dir), "-w", w, "--n", "1", "--steps", "2",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "expected a finite number" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # refused before sampling


def test_another_sampler_does_not_take_the_recipes_options_silently(tiny_recipe, capsys):
    """Issue 24, defect 5: --sampler X dropped the recipe's sampler options without a word. The recipe's options
    belong to its sampler; another one runs with its own defaults plus what is passed for it, and a note says so."""
    import gentool
    from gentool.service import SamplingOptions, plan

    recipe = gentool.load_recipe(tiny_recipe, overrides=['sampler.name="ddim"', "sampler.eta=0.5",
                                                         'sampler.spacing="trailing"'])
    run = gentool.build(recipe, device="cpu")
    same = plan(run, SamplingOptions(sampler="ddim"))
    assert same.sampler.keywords["eta"] == 0.5 and same.notes == []
    other = plan(run, SamplingOptions(sampler="dpmpp_2m", sampler_options={"spacing": "karras"}))
    assert other.sampler.keywords["spacing"] == "karras" and "eta" not in other.sampler.keywords
    assert len(other.notes) == 1 and "eta = 0.5" in other.notes[0] and "'ddim'" in other.notes[0]
    assert "note: sampler 'dpmpp_2m' runs with its own defaults" in capsys.readouterr().err
    # the recipe sampler's own defaults (filled into every resolved recipe) were never chosen: no note for them
    assert "options (eta = 0.5, spacing = 'trailing') belong" in plan(run, SamplingOptions(sampler="dpmpp_2m")).notes[0]
    plain = gentool.build(gentool.load_recipe(tiny_recipe, overrides=['sampler.name="dpmpp_2m"']), device="cpu")
    assert plain.recipe.sampler.options  # spacing, lambda_min, ... resolved
    assert plan(plain, SamplingOptions(sampler="ancestral")).notes == []
    with pytest.raises(Exception, match="eta"):  # an option the sampler lacks is refused, naming it
        plan(run, SamplingOptions(sampler="dpmpp_2m", sampler_options={"eta": 1.0}))
