"""gentool compare and gentool sweep: labels from recipe differences, the figure, the table, a resumable sweep."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import tomli_w
from PIL import Image
from typer.testing import CliRunner

from _tiny import recipe_text
from gentool.cli import app
from gentool.compare import CompareError, compare, differences, flatten, label_of
from gentool.errors import UsageError
from gentool.recipe import RecipeError
from gentool.sweep import parse_axes, split_values, sweep, variants

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# -- labels --------------------------------------------------------------------
def test_a_run_is_named_by_what_differs_between_the_recipes():
    base = {"run": {"name": "a", "output_dir": "runs", "seed": 0}, "train": {"lr": 2e-4, "steps": 10},
            "schedule": {"name": "linear", "timesteps": 50}}
    cos = json.loads(json.dumps(base))
    cos["run"]["name"] = "b"
    cos["schedule"] = {"name": "cosine", "timesteps": 50, "s": 0.008}  # s: implied by the name
    fast = json.loads(json.dumps(cos))
    fast["run"]["name"], fast["train"]["lr"] = "c", 1e-3
    diffs = differences([flatten(r) for r in (base, cos, fast)])
    assert diffs == [{"schedule.name": "linear", "train.lr": 2e-4}, {"schedule.name": "cosine", "train.lr": 2e-4},
                     {"schedule.name": "cosine", "train.lr": 1e-3}]
    assert [label_of(d, "x") for d in diffs] == ["schedule.name=linear, train.lr=0.0002",
                                                 "schedule.name=cosine, train.lr=0.0002",
                                                 "schedule.name=cosine, train.lr=0.001"]
    assert differences([flatten(base), flatten(base)]) == [{}, {}]
    assert label_of({}, "runs/a") == "runs/a"


def test_sweep_values_split_at_top_level_commas_only():
    assert split_values("linear,cosine") == ["linear", "cosine"]
    assert split_values("[1, 2],[1,2,2]") == ["[1, 2]", "[1,2,2]"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]
    vs = variants(parse_axes(["schedule.name=linear,cosine", "train.lr=1e-3,2e-4", "train.steps=7"]))
    assert [v.name for v in vs] == ["schedule.name=linear,train.lr=1e-3", "schedule.name=linear,train.lr=2e-4",
                                    "schedule.name=cosine,train.lr=1e-3", "schedule.name=cosine,train.lr=2e-4"]
    assert vs[3].overrides == ["train.steps=7", "schedule.name=cosine", "train.lr=2e-4"]
    for bad in (["schedule.name"], ["run.name=a,b"], ["train.lr=1,,2"], ["train.lr=1,2", "train.lr=3,4"]):
        with pytest.raises(UsageError):
            parse_axes(bad)



def test_every_variant_has_its_own_folder():
    """Names that share their first 200 bytes, or differ only in replaced characters, stay distinct and short."""
    long = "x" * 300
    vs = variants(parse_axes([f'data.root="/d/{long}1","/d/{long}2"', 'run.device="a b","a_b"']))
    names = [v.name for v in vs]
    assert len(set(names)) == len(vs) == 4, names
    assert all(len(n.encode()) <= 255 and "/" not in n for n in names), names
    assert [v.overrides for v in vs] == [[f'data.root="/d/{long}{i}"', f"run.device={d}"]
                                         for i in (1, 2) for d in ('"a b"', '"a_b"')]
    assert variants(parse_axes(["schedule.name=linear,cosine"]))[1].name == "schedule.name=cosine"  # unchanged

# -- compare -------------------------------------------------------------------
def _fake_run(root: Path, name: str, schedule: str, losses: list[float], test: list[float]) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    recipe = {"run": {"name": name, "output_dir": str(root), "seed": 0},
              "schedule": {"name": schedule, "timesteps": 50}, "train": {"steps": 4}}
    (run_dir / "recipe.resolved.toml").write_text(tomli_w.dumps(recipe), encoding="utf-8")
    lines = [{"step": i + 1, "loss": v, "lr": 1e-3} for i, v in enumerate(losses)]
    lines += [{"step": 2 * (i + 1), "test_loss/t=10": v} for i, v in enumerate(test)]
    lines.append({"step": 4, "eval/fid": 12.5})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 5, "lo',
                                           encoding="utf-8")  # a line cut short by a crash
    return run_dir


def test_compare_overlays_the_runs_and_tabulates_their_final_values(tmp_path):
    a = _fake_run(tmp_path, "a", "linear", [1.0, 0.8, 0.6, None], [0.9, 0.7])  # a NaN loss logged as null
    b = _fake_run(tmp_path, "b", "cosine", [1.1, 0.7, 0.5, 0.4], [0.8, 0.6])
    result = invoke("compare", a, b, "--json", "--svg")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["label"] for r in data["runs"]] == ["schedule.name=linear", "schedule.name=cosine"]
    assert data["metrics"] == ["loss", "test_loss/t=10", "eval/fid"]
    assert data["runs"][0]["final"]["loss"] == 0.6 and data["runs"][1]["final"]["loss"] == 0.4
    assert data["runs"][1]["final"]["test_loss/t=10"] == 0.6 and data["runs"][0]["step"] == 4
    png = tmp_path / "compare.png"  # the runs' common parent
    assert data["figures"] == [str(png), str(png.with_suffix(".svg"))]
    with Image.open(png) as im:
        assert im.size[0] > 800 and im.size[1] > 300
    assert "<svg" in png.with_suffix(".svg").read_text(encoding="utf-8")[:500]
    table = invoke("compare", a, b, "--no-figure")
    assert table.exit_code == 0 and "schedule.name=linear" in table.output and "schedule.name=cosine" in table.output
    assert "0.4" in table.output and "12.5" in table.output


def test_compare_keeps_a_sweeps_variant_order_and_prints_paths_as_given(tmp_path, monkeypatch):
    """The shell's * sorts the variants by name; the sweep's figure has them in its own order (and colours)."""
    folder = tmp_path / "runs" / "sw"
    for name in ("schedule.name=linear", "schedule.name=cosine", "schedule.name=sigmoid"):
        _fake_run(folder, name, name.split("=")[1], [1.0, 0.5], [0.9])
    (folder / "sweep.json").write_text(json.dumps({"variants": [{"name": "schedule.name=linear"},
                                                               {"name": "schedule.name=cosine"},
                                                               {"name": "schedule.name=sigmoid"}]}))
    monkeypatch.chdir(tmp_path)
    globbed = sorted(str(p) + "/" for p in Path("runs/sw").glob("schedule.name=*"))  # cosine, linear, sigmoid
    result = invoke("compare", *globbed, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["label"] for r in data["runs"]] == ["schedule.name=linear", "schedule.name=cosine",
                                                  "schedule.name=sigmoid"]
    assert data["figures"] == [str(Path("runs/sw/compare.png"))]
    table = invoke("compare", *globbed)
    assert f"wrote {Path('runs/sw/compare.png')}" in table.output and str(tmp_path) not in table.output


def test_compare_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(CompareError, match="not a gentool run directory"):
        compare([tmp_path])
    result = invoke("compare", tmp_path / "missing")
    assert result.exit_code == 2 and "no such folder" in result.output


# -- sweep ---------------------------------------------------------------------
def _sweep_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "sw.toml"
    path.write_text(recipe_text((tmp_path / "runs").as_posix(), name="sw", run="seed = 0",
                                train="steps = 4\nbatch_size = 8\ncheckpoint_every = 2\nlog_every = 1"),
                    encoding="utf-8")
    return path


def test_single_values_override_every_variant_and_the_sweep_folder(tmp_path):
    recipe = _sweep_recipe(tmp_path)
    other = tmp_path / "elsewhere"
    messages: list[str] = []
    result = sweep(recipe, ["schedule.name=linear,cosine", f"run.output_dir={other.as_posix()}", "train.steps=0"],
                   log=messages.append)
    assert result.folder == other / "sw" and result.comparison is None
    assert sorted(p.name for p in result.folder.iterdir() if p.is_dir()) == ["schedule.name=cosine",
                                                                             "schedule.name=linear"]
    assert 'steps = 0' in (result.folder / "schedule.name=cosine" / "recipe.resolved.toml").read_text()
    assert any("no comparison" in m for m in messages)
    fresh = tmp_path / "fresh"
    with pytest.raises(RecipeError, match="quadratic"):  # every variant is checked before anything is written
        sweep(recipe, ["schedule.name=linear,quadratic", f"run.output_dir={fresh.as_posix()}"])
    assert not fresh.exists()


def test_several_recipes_are_one_more_axis_and_one_figure(tmp_path):
    # DDPM against flow matching: whole recipes that differ in their [process], [schedule] and [objective]
    ddpm = _sweep_recipe(tmp_path)
    text = ddpm.read_text(encoding="utf-8")
    flow = tmp_path / "sw_flow.toml"
    flow.write_text(text.replace('[schedule]\nname = "linear"\ntimesteps = 50',
                                 '[process]\nname = "flow"\n\n[objective]\nname = "flow_matching"'),
                    encoding="utf-8")
    assert "flow_matching" in flow.read_text(encoding="utf-8")
    vs = variants(parse_axes(["train.lr=1e-3,2e-4"]), [ddpm, flow])
    assert [v.name for v in vs] == ["sw,train.lr=1e-3", "sw,train.lr=2e-4", "sw_flow,train.lr=1e-3",
                                    "sw_flow,train.lr=2e-4"]
    assert [v.recipe for v in vs] == [ddpm, ddpm, flow, flow]
    result = sweep([ddpm, flow], ["train.steps=2"], progress=False, log=lambda m: None)
    assert result.folder == tmp_path / "runs" / "sw+sw_flow"
    assert sorted(p.name for p in result.folder.iterdir() if p.is_dir()) == ["sw", "sw_flow"]
    labels = [r.label for r in result.comparison.runs]
    assert len(labels) == 2 and any("flow" in label for label in labels), labels
    assert (result.folder / "compare.png").is_file()
    state = json.loads((result.folder / "sweep.json").read_text(encoding="utf-8"))
    assert state["recipe"] == [str(ddpm), str(flow)] and set(state["done"]) == {"sw", "sw_flow"}
    again = sweep([ddpm, flow], ["train.steps=2"], progress=False, log=lambda m: None)  # resumes: nothing new
    assert again.trained == [] and sorted(again.skipped) == ["sw", "sw_flow"]
    with pytest.raises(UsageError, match="given twice"):
        sweep([ddpm, ddpm], [])


def test_a_sweep_trains_each_variant_once_even_when_killed_and_restarted(tmp_path):
    recipe = _sweep_recipe(tmp_path)
    folder = tmp_path / "runs" / "sw"
    messages: list[str] = []

    def kill_in_second_variant(message: str) -> None:
        messages.append(message)
        if message.startswith("step 2/4") and any("schedule.name=cosine" in m for m in messages):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the second variant trains

    first = sweep(recipe, ["schedule.name=linear,cosine"], run_tasks=False, log=kill_in_second_variant)
    assert first.interrupted and first.trained == ["schedule.name=linear", "schedule.name=cosine"]
    linear, cosine = folder / "schedule.name=linear", folder / "schedule.name=cosine"
    done_ckpt = sorted((linear / "checkpoints").glob("*.pt"))
    stamps = {p: p.stat().st_mtime_ns for p in done_ckpt}
    assert [p.name for p in done_ckpt] == ["step_00000002.pt", "step_00000004.pt"]
    assert [p.name for p in (cosine / "checkpoints").glob("*.pt")] == ["step_00000002.pt"]

    messages.clear()
    again = sweep(recipe, ["schedule.name=linear,cosine"], run_tasks=False, log=messages.append)
    assert not again.interrupted
    assert again.skipped == ["schedule.name=linear"] and again.trained == ["schedule.name=cosine"]
    assert any("resuming from" in m and "step 2 of 4" in m for m in messages)
    assert {p: p.stat().st_mtime_ns for p in done_ckpt} == stamps  # the finished variant was not touched
    steps = [json.loads(line)["step"] for line in (cosine / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4]  # each step once
    assert (folder / "compare.png").exists()
    assert sorted(json.loads((folder / "sweep.json").read_text())["done"]) == ["schedule.name=cosine",
                                                                             "schedule.name=linear"]

    result = invoke("sweep", recipe, "--set", "schedule.name=linear,cosine", "--no-tasks")  # all done: compare only
    assert result.exit_code == 0, result.output
    assert "schedule.name=linear" in result.output and "schedule.name=cosine" in result.output
    assert result.output.count("finished before; skipped") == 2 and "starting" not in result.output
    assert {p: p.stat().st_mtime_ns for p in done_ckpt} == stamps

    messages.clear()  # more steps for one variant only (--variant 1): it trains on from step 4, the other waits
    more = sweep(recipe, ["schedule.name=linear,cosine", "train.steps=5"], only=1, run_tasks=False,
                 log=messages.append)
    assert more.trained == ["schedule.name=cosine"] and more.comparison is None
    assert any("step 4 of 5" in m for m in messages)
    assert not (linear / "checkpoints" / "step_00000005.pt").exists()



SEEDS = "run.seed=0,1,2,3,4,5"


def _one_variant(recipe: str, index: int) -> None:
    """A ``--variant I`` process whose file system is slow: 0.3 s between reading sweep.json and writing it."""
    import time

    import gentool.sweep as module

    read = module._read_state

    def slow(path):
        state = read(path)
        time.sleep(0.3)
        return state

    module._read_state = slow
    sweep(recipe, [SEEDS, "train.steps=0"], only=index, run_tasks=False, progress=False, log=lambda m: None)


def test_variant_processes_writing_sweep_json_at_once_lose_no_entry(tmp_path):
    import multiprocessing

    recipe = _sweep_recipe(tmp_path)
    sweep(recipe, [SEEDS, "train.steps=0"], only=0, run_tasks=False, progress=False, log=lambda m: None)  # warm
    procs = [multiprocessing.get_context("fork").Process(target=_one_variant, args=(str(recipe), i))
             for i in range(1, 6)]  # five job-array processes at once
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0] * 5
    state = json.loads((tmp_path / "runs" / "sw" / "sweep.json").read_text())
    assert sorted(state["done"]) == [f"run.seed={i}" for i in range(6)]
    assert not list((tmp_path / "runs" / "sw").glob(".sweep.json.*.tmp"))



def test_an_absurd_grid_is_refused_at_once_and_a_sweep_says_how_many_variants(tmp_path, monkeypatch):
    import gentool.recipe

    recipe = _sweep_recipe(tmp_path)
    checked = []
    real = gentool.recipe.load_recipe

    def load_recipe(*args, **kwargs):
        checked.append(1)
        assert len(checked) < 50, "validating the variants of a grid it should refuse"
        return real(*args, **kwargs)

    monkeypatch.setattr(gentool.recipe, "load_recipe", load_recipe)
    seeds, lrs = ",".join(map(str, range(1000))), ",".join(f"{i}e-5" for i in range(1, 1002))
    with pytest.raises(UsageError, match=r"gives 1,001,000 variants \(1000 \(run.seed\) x 1001 \(train.lr\)\)"):
        sweep(recipe, [f"run.seed={seeds}", f"train.lr={lrs}"])
    assert checked == [] and not (tmp_path / "runs").exists()
    messages: list[str] = []
    sweep(recipe, ["schedule.name=linear,cosine", "train.steps=0"], log=messages.append)
    assert messages[0] == "sweep of 2 variants; checking their recipes"
