"""``gentool distill``: one-line refusals of what a method cannot distil, and the distilled recipe it writes."""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomli_w
from _distill import contract_teacher
from typer.testing import CliRunner

from gentool import ComponentSpec
from gentool.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")


def distill(*args: str):
    result = CliRunner().invoke(app, ["distill", *map(str, args)])
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("warning:")]
    return result, lines


def refused(lines: list[str], *words: str) -> None:
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(lines), lines
    assert all(w in errors[0] for w in words), errors[0]


@pytest.mark.parametrize("method, teacher, words", [
    ("progressive", "eps", ["predicts 'eps'", "v or x0", 'prediction = "v"']),
    ("progressive", "consistency", ["variance-preserving", "alpha^2 + sigma^2"]),
    ("consistency", "eps", ["x_t = x_0 + sigma eps", "alpha = 0.", '"edm"']),
    ("ect", "reflow", ["x_t = x_0 + sigma eps", '"edm"']),
    ("reflow", "eps", ["(1 - t) x_0 + t eps", '"flow"']),
    ("reflow", "consistency", ["(1 - t) x_0 + t eps", '"flow"']),
])
def test_a_run_the_method_cannot_distil_is_refused_in_one_line(trained_toy, method, teacher, words):
    run = trained_toy.run_dir if teacher == "eps" else contract_teacher(teacher)["teacher"]
    result, lines = distill(run, "--method", method)
    assert result.exit_code == 2
    refused(lines, f"cannot distil it with --method {method}", *words)


def test_a_run_directory_without_a_checkpoint_is_refused(trained_toy, tmp_path):
    run_dir = shutil.copytree(trained_toy.run_dir, tmp_path / "untrained")
    shutil.rmtree(run_dir / "checkpoints")
    result, lines = distill(run_dir, "--method", "progressive")
    assert result.exit_code == 2
    refused(lines, "no checkpoint", "gentool run")
    assert not (tmp_path / "untrained_progressive").exists()  # nothing written
    result, lines = distill(tmp_path / "nowhere", "--method", "progressive")
    refused(lines, "no such run directory")
    result, lines = distill(trained_toy.run_dir, "--method", "distil")
    refused(lines, "--method 'distil'", "progressive, consistency, ect, reflow")


def test_check_prints_the_distilled_recipe_and_writes_nothing(tmp_path):
    teacher = contract_teacher("progressive")["teacher"]
    result, lines = distill(teacher, "--method", "progressive", "--check", "--set", "objective.rounds=3")
    assert result.exit_code == 0, result.output
    recipe = tomllib.loads("\n".join(line for line in result.stdout.splitlines()))
    assert recipe["objective"]["name"] == "progressive" and recipe["objective"]["prediction"] == "v"
    assert recipe["objective"]["teacher"].endswith("progressive_progressive/teacher.safetensors")
    assert recipe["train"]["steps"] == 3 * 1000  # rounds x steps_per_round
    assert recipe["sampler"] == {"name": "ddim", "guidance": 0.0, "steps": 64 // 2**3, "eta": 0.0,
                                 "clip_denoised": True, "spacing": "trailing"}
    assert not (Path(teacher).parent / "progressive_progressive").exists()


def test_the_distilled_recipe_moves_label_dropout_and_keeps_the_tasks_that_start_from_noise(trained_toy):
    from gentool_distill.recipes import distilled_recipe

    tasks = [ComponentSpec("sample", {"n": 4, "steps": 10, "sampler": "ancestral"}),
             ComponentSpec("inpaint", {"indices": [0]})]
    recipe = replace(trained_toy.recipe, tasks=tasks, sampler=replace(trained_toy.recipe.sampler, guidance=2.0))
    teacher = SimpleNamespace(recipe=recipe, model=trained_toy.model, process=trained_toy.process)
    data, notes = distilled_recipe(teacher, "progressive", "student", {"rounds": 2, "teacher_steps": 16})
    assert data["conditioner"]["p_uncond"] == 0.0 and data["objective"]["p_uncond"] == 0.2  # the teacher's
    assert data["objective"]["guidance"] == 2.0 and "guidance" not in data["sampler"]  # w moves into the student
    assert distilled_recipe(teacher, "ect", "student")[0]["sampler"]["guidance"] == 2.0  # ECT's targets: no teacher
    assert data["run"]["name"] == "student" and data["run"]["output_dir"] == trained_toy.recipe.run.output_dir
    assert data["tasks"] == [{"name": "sample", "n": 4}]  # its own steps and sampler give way to [sampler]
    assert len(notes) == 1 and "'inpaint' is left out" in notes[0]
    assert data["sampler"]["steps"] == 4 and data["train"]["preview_steps"] == 4
    for table in ("data", "schedule", "denoiser"):
        assert data[table] == trained_toy.recipe.to_dict()[table]


def test_a_guided_teacher_mixes_its_conditional_and_unconditional_predictions(trained_toy):
    """eps~ = (1 + w) eps(x, c) - w eps(x, null) (Ho and Salimans 2022, eq. 6), x0 from it, written out here;
    a null label gets the plain model, and labels drop to -1 at the rate asked."""
    import torch

    from gentool_distill.teacher import Teacher, drop_labels

    model, process = trained_toy.sampling_model, trained_toy.process
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 10, 25, 49])
    labels = torch.tensor([0, 1, -1, 1])
    with torch.no_grad():
        eps_c, eps_u = model(x, t, labels), model(x, t, torch.full_like(labels, -1))
    eps = 3.0 * eps_c - 2.0 * eps_u
    abar = process.alphas_cumprod_64[t].reshape(-1, 1, 1, 1)
    x0 = (x.double() - (1 - abar).sqrt() * eps.double()) / abar.sqrt()
    guided = Teacher(model, process, guidance=2.0)(x, t, labels)
    assert torch.allclose(guided.eps, eps, atol=1e-5) and torch.allclose(guided.x0.double(), x0, atol=1e-4)
    assert torch.allclose(guided.eps[2], eps_u[2], atol=1e-5)  # the null label: unguided
    torch.manual_seed(0)
    dropped = drop_labels(torch.zeros(10_000, dtype=torch.long), 0.2)
    assert set(dropped.tolist()) == {0, -1} and abs(float((dropped == -1).float().mean()) - 0.2) < 0.02


def test_a_recipe_that_no_longer_fits_its_teacher_is_refused(tmp_path):
    """A changed [schedule] at the command, before anything is written; a changed prediction when the distilled
    recipe trains (gentool run on it, as a recipe written by hand)."""
    teacher = contract_teacher("progressive")["teacher"]
    result, lines = distill(teacher, "--method", "progressive", "--set", "schedule.timesteps=100",
                            "--name", "changed")
    refused(lines, "[schedule]", "must be the same")
    assert not (Path(teacher).parent / "changed").exists()

    result, lines = distill(teacher, "--method", "progressive", "--check", "--set", "train.steps=1")
    recipe = tomllib.loads(result.stdout)
    recipe["objective"]["teacher"] = teacher
    recipe["run"]["output_dir"] = (tmp_path / "runs").as_posix()
    recipe["objective"]["prediction"] = "x0"
    path = tmp_path / "student.toml"
    path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(path), "--no-tasks"])
    assert result.exit_code == 2 and "objective.teacher" in result.output and "{'name': 'v'}" in result.output
    assert "Traceback" not in result.output


def test_a_student_whose_conditioner_drops_labels_is_refused(trained_toy):
    """The objective drops labels for teacher and student alike; the student's conditioner must not as well."""
    from gentool import RecipeError
    from gentool_distill.teacher import check_student_labels

    with pytest.raises(RecipeError, match=r"conditioner.p_uncond: 0.2: a distillation drops labels itself"):
        check_student_labels(trained_toy)


def test_the_consistency_sampler_is_refused_for_a_model_that_is_not_a_consistency_model(tmp_path):
    """gentool check (and the sampling service) refuse sampling a plain denoiser with the consistency sampler."""
    import tomli_w
    from typer.testing import CliRunner

    import gentool
    from gentool.cli import app
    from gentool.testing import tiny_recipe

    data = tiny_recipe(tmp_path, conditional=False)
    data["sampler"] = {"name": "consistency"}
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2 and "consistency model" in result.output and "'consistency'" in result.output
    data.pop("sampler")
    run = gentool.build(gentool.load_recipe(data=data), device="cpu")
    import pytest

    with pytest.raises(gentool.UsageError, match="consistency model"):
        run.sample(1, sampler="consistency", progress=False)
