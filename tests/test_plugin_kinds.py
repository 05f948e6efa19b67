"""The objective, logger and command kinds, each registered through its hook as a plugin would.

A plugin object passed as ``extra`` to :func:`gentool.plugins.load_plugins`
goes through exactly the path of an installed plugin: hook validation, the
registry, recipe validation, the engine and the CLI.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import gentool
from _tiny import quiet_train, write_recipe
from gentool import plugins
from gentool.cli import app
from gentool.plugins import load_plugins
from gentool.recipe import RecipeError, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def with_plugin(monkeypatch):
    """``install(**hooks)``: make a plugin of those hook functions the process-wide one."""
    monkeypatch.setenv("GENTOOL_DISABLE_PLUGIN_AUTOLOAD", "1")

    def install(**hooks):
        plugin = types.SimpleNamespace(**{name: gentool.hookimpl(fn) for name, fn in hooks.items()})
        state = load_plugins(extra=[("testplugin", plugin)])
        assert "testplugin" not in {b.name for b in state.broken}, [b.error for b in state.broken]
        plugins.reset(state)
        return state

    yield install
    plugins.reset()


def build(recipe: Path, *overrides: str) -> gentool.Run:
    return gentool.build(load_recipe(recipe, overrides=list(overrides)), device="cpu")


# -- objectives ----------------------------------------------------------------------------

def half_l2(*, scale: float = 0.5):
    """L_simple times a constant.

    Args:
        scale: the constant.
    """
    ddpm = plugins.registry().get("objective", "ddpm").factory()

    class Scaled:
        prediction = "eps"

        def draw(self, diffusion, x0, generator):
            return ddpm.draw(diffusion, x0, generator)

        def loss(self, net, diffusion, x0, labels, t, noise):
            per, _ = ddpm.loss(net, diffusion, x0, labels, t, noise)
            return scale * per, {"unscaled": per.mean()}

    return Scaled()


def test_hook_gentool_register_objectives(with_plugin, tmp_path):
    def gentool_register_objectives(register):
        register("half_l2", half_l2)

    with_plugin(gentool_register_objectives=gentool_register_objectives)
    recipe = write_recipe(tmp_path, steps=1, checkpoint_every=1, log_every=1)
    plain = build(recipe, "run.name=plain")
    scaled = build(recipe, "run.name=scaled", 'objective.name="half_l2"')
    assert type(scaled.objective).__name__ == "Scaled" and scaled.recipe.to_dict()["objective"] == {
        "name": "half_l2", "scale": 0.5}
    quiet_train(plain)
    quiet_train(scaled)
    first = [json.loads(line) for line in (plain.run_dir / "metrics.jsonl").read_text().splitlines()][0]
    record = [json.loads(line) for line in (scaled.run_dir / "metrics.jsonl").read_text().splitlines()][0]
    # the same seed and weights at step 1: the engine trained on the plugin's loss, and logged its extra
    assert record["loss"] == 0.5 * first["loss"] and record["unscaled"] == first["loss"]


def test_the_test_loss_and_evals_loss_t_go_through_the_objective(with_plugin, tmp_path):
    from gentool.engine.test_loss import test_losses
    from gentool.evaluation.likelihood import loss_t_metric

    def gentool_register_objectives(register):
        register("half_l2", half_l2)

    with_plugin(gentool_register_objectives=gentool_register_objectives)
    recipe = write_recipe(tmp_path, steps=0)
    plain = build(recipe, "run.name=plain", "train.test_loss_timesteps=[3, 30]")
    scaled = build(recipe, "run.name=scaled", 'objective.name="half_l2"', "train.test_loss_timesteps=[3, 30]")
    want = test_losses(plain, [3, 30], max_batches=1)  # the same seed: the same weights and fixed noise
    assert test_losses(scaled, [3, 30], max_batches=1) == {t: 0.5 * v for t, v in want.items()}
    assert loss_t_metric(scaled, batch_size=256, max_batches=1) == {f"loss_t/{t}": 0.5 * v for t, v in want.items()}


def test_bench_times_training_steps_of_the_objective(with_plugin, tmp_path):
    from gentool.bench import BenchSettings, bench_run

    calls = []

    def counting(*, scale: float = 0.5):
        """L_simple times a constant, counting its calls.

        Args:
            scale: the constant.
        """
        objective = half_l2(scale=scale)
        inner = objective.loss
        objective.loss = lambda *args: calls.append(args[2].shape[0]) or inner(*args)  # x0
        return objective

    def gentool_register_objectives(register):
        register("counting", counting)

    with_plugin(gentool_register_objectives=gentool_register_objectives)
    run = build(write_recipe(tmp_path, steps=0), 'objective.name="counting"')
    result = bench_run(run, BenchSettings(batch=2, steps=2, warmup=1, sample_batch=2, sample_steps=1))
    assert calls == [2, 2, 2] and result["train_img_per_s"] > 0  # one warm-up and two timed steps of batch 2


def test_unknown_objective_option_names_the_key(with_plugin, tmp_path):
    with pytest.raises(RecipeError, match=r"objective\.weight: unknown key 'weight'"):
        load_recipe(write_recipe(tmp_path), overrides=["objective.weight=2"])


# -- loggers -------------------------------------------------------------------------------

class Recorder:
    """A logger that keeps every call (on the class: the engine builds its own instance)."""

    calls: list[tuple] = []

    def __init__(self, run_dir: Path) -> None:
        self.calls.append(("init", Path(run_dir).name))

    def log_scalars(self, step, scalars):
        self.calls.append(("scalars", step, dict(scalars)))

    def log_image(self, step, name, image):
        self.calls.append(("image", step, name, tuple(image.shape), float(image.min()), float(image.max())))

    def log_text(self, step, name, text):
        self.calls.append(("text", step, name, text))

    def close(self):
        self.calls.append(("close",))


def recorder(run_dir: Path) -> Recorder:
    """Records calls."""
    return Recorder(run_dir)


class Broken(Recorder):
    def log_scalars(self, step, scalars):
        raise OSError("the tracking server is down")


def broken(run_dir: Path) -> Broken:
    """Fails at every scalar."""
    return Broken(run_dir)


def test_hook_gentool_register_loggers(with_plugin, tmp_path):
    def gentool_register_loggers(register):
        register("recorder", recorder)

    with_plugin(gentool_register_loggers=gentool_register_loggers)
    Recorder.calls = []
    recipe = write_recipe(tmp_path, steps=4, checkpoint_every=4, log_every=2,
                          train="sample_every = 4\nsample_n = 4\ntest_loss_every = 4\ntest_loss_batches = 1")
    run = build(recipe, 'run.loggers=["jsonl", "recorder"]')
    quiet_train(run)
    calls = Recorder.calls
    assert calls[0] == ("init", "toy") and calls[-1] == ("close",)
    text = [c for c in calls if c[0] == "text"]
    assert text == [("text", 0, "recipe", run.recipe.dumps())]  # the resolved recipe, at the first step
    scalars = [c for c in calls if c[0] == "scalars"]
    train_lines = [c for c in scalars if "loss" in c[2]]
    assert [c[1] for c in train_lines] == [2, 4]
    assert {"loss", "lr", "grad_norm", "skipped", "steps_per_s", "img_per_s"} <= set(train_lines[0][2])
    assert any(any(k.startswith("test_loss/t=") for k in c[2]) and c[1] == 4 for c in scalars)
    images = [c for c in calls if c[0] == "image"]
    assert len(images) == 1 and images[0][1:3] == (4, "samples")
    c, h, w = images[0][3]
    assert c in (1, 3) and h > 8 and w > 8 and 0.0 <= images[0][4] <= images[0][5] <= 1.0  # a [C, H, W] grid in [0, 1]
    # the jsonl logger got the same scalars: metrics.jsonl as before
    lines = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [{"step": c[1], **c[2]} for c in scalars] == lines


def test_a_raising_logger_is_reported_once_and_switched_off(with_plugin, tmp_path):
    def gentool_register_loggers(register):
        register("broken", broken)

    with_plugin(gentool_register_loggers=gentool_register_loggers)
    Recorder.calls = []
    run = build(write_recipe(tmp_path, steps=4, checkpoint_every=4, log_every=1), 'run.loggers=["broken", "jsonl"]')
    result, messages = quiet_train(run)
    assert result.step == 4
    warnings = [m for m in messages if "logger 'broken'" in m]
    assert len(warnings) == 1 and "the tracking server is down" in warnings[0], messages
    assert not [c for c in Recorder.calls if c[0] == "scalars"]
    assert len((run.run_dir / "metrics.jsonl").read_text().splitlines()) == 4  # the others go on


def test_console_logger_prints_metric_lines_with_its_options(tmp_path, capsys):
    run = build(write_recipe(tmp_path, steps=2, checkpoint_every=2, log_every=1),
                'run.loggers=[{ name = "console", digits = 2 }]')
    assert run.recipe.logger_options == {"console": {"digits": 2}}
    assert 'loggers = [\n    { name = "console", digits = 2 },\n]' in run.recipe.dumps()  # kept in the resolved recipe
    quiet_train(run)
    err = capsys.readouterr().err
    losses = re.findall(r"step (\d): loss=(\S+) ", err)
    assert [step for step, _ in losses] == ["1", "2"] and all(len(v.replace("0.", "")) <= 2 for _, v in losses), err
    assert not (run.run_dir / "metrics.jsonl").exists()  # only the loggers asked for


def test_a_logger_option_is_checked_like_any_recipe_option(tmp_path):
    with pytest.raises(RecipeError, match=r"run\.loggers\.0\.digit: unknown key 'digit'; did you mean 'digits'"):
        load_recipe(write_recipe(tmp_path), overrides=['run.loggers=[{ name = "console", digit = 2 }]'])


def test_unknown_logger_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match=r"run\.loggers\.1: unknown logger 'jsnol'; did you mean 'jsonl'"):
        load_recipe(write_recipe(tmp_path), overrides=['run.loggers=["console", "jsnol"]'])


# -- commands ------------------------------------------------------------------------------

def hello(
    name: str = typer.Argument(..., help="Who to greet."),
    times: int = typer.Option(1, "--times", help="How often."),
) -> None:
    """Greet NAME (a plugin command)."""
    if times < 1:
        from gentool.errors import UsageError

        raise UsageError(f"--times must be at least 1, got {times}")
    for _ in range(times):
        print(f"hello {name}")


def test_hook_gentool_register_commands(with_plugin):
    def gentool_register_commands(register):
        register("hello", hello)

    with_plugin(gentool_register_commands=gentool_register_commands)
    runner = CliRunner()
    listed = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "hello" in listed.output and "Greet NAME" in listed.output
    ran = runner.invoke(app, ["hello", "world", "--times", "2"])
    assert ran.exit_code == 0 and ran.output.count("hello world") == 2, ran.output
    refused = runner.invoke(app, ["hello", "world", "--times", "0"])
    assert refused.exit_code == 2 and "error: --times must be at least 1" in refused.output
    rows = json.loads(runner.invoke(app, ["list-plugins", "--json"]).output)
    assert {"kind": "command", "name": "hello", "plugin": "testplugin"}.items() <= next(
        r for r in rows if r["name"] == "hello").items()


def test_a_plugin_command_never_replaces_a_builtin_one(with_plugin):
    def gentool_register_commands(register):
        register("run", hello)

    with_plugin(gentool_register_commands=gentool_register_commands)
    out = CliRunner().invoke(app, ["run", "--help"])
    assert out.exit_code == 0 and "Greet NAME" not in out.output


def test_help_loads_only_the_command_hooks(monkeypatch):
    """``gentool --help`` calls no other hook: a slow or heavy component module is never imported for it."""
    called = []

    def gentool_register_schedules(register):
        called.append("schedules")

    def gentool_register_commands(register):
        called.append("commands")
        register("hello", hello)

    plugin = types.SimpleNamespace(gentool_register_schedules=gentool.hookimpl(gentool_register_schedules),
                                   gentool_register_commands=gentool.hookimpl(gentool_register_commands))
    state = load_plugins(extra=[("testplugin", plugin)], kinds=("command",))
    assert called == ["commands"] and "hello" in state.registry.names("command")
    assert state.registry.names("schedule") == []
    plugins.reset()
    monkeypatch.setattr(plugins, "load_plugins", lambda **kw: state if kw.get("kinds") == ("command",) else None)
    assert plugins.commands()["hello"].plugin == "testplugin"  # what --help lists, without the full load
    plugins.reset()
