"""The recipe of a distilled run, made from its teacher's: the method's objective, its few-step sampler.

Everything the teacher was trained with stays (data, process, schedule, network, conditioner, train
settings, the sampling tasks), except:

* ``[objective]``: the method, its ``teacher`` (the copy in the new run directory) and its options;
* ``[conditioner] p_uncond`` moves to ``objective.p_uncond`` (the distillation drops labels itself, for the
  teacher and the student alike) and becomes 0;
* ``[train] steps``: the method's (progressive: rounds x steps_per_round);
* ``[sampler]``: the student's few-step sampler; the tasks' own sampling options are removed (they use it),
  and tasks that sample from a state other than pure noise (inpainting, interpolation, ...) are left out;
* a guided teacher's ``[sampler] guidance`` w moves to ``objective.guidance`` (the student learns the guided
  sampler and samples unguided) for the methods whose targets come from the teacher's sampler (all but ``ect``).
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

from gentool_distill.teacher import TEACHER_FILE

#: method -> the module of its objective (refuse, objective_options, train_steps, sampler)
METHODS = {"progressive": "progressive", "consistency": "consistency", "ect": "ect", "reflow": "reflow"}
#: the methods whose teacher samples with its [sampler] guidance, baked into the student (which then samples unguided)
GUIDED = ("progressive", "consistency", "reflow")
#: the tasks that start from pure noise: they make sense for a few-step student
TASKS = ("sample", "class_grid", "guidance_sweep", "animate")
#: a task's options that choose how it samples (the distilled run's [sampler] decides)
SAMPLING_KEYS = ("sampler", "steps", "sampler_options")


def module(method: str) -> Any:
    """The module of ``method``'s objective (the package binds the objective factories under the same names)."""
    return importlib.import_module(f"gentool_distill.{METHODS[method]}")


def refuse(method: str, teacher: Any) -> str | None:
    """Why ``teacher`` (a loaded run) cannot be distilled by ``method`` (None: it can)."""
    return module(method).refuse(teacher, method)


def distilled_recipe(teacher: Any, method: str, name: str, options: dict[str, Any] | None = None) -> tuple[dict, list]:
    """The TOML data of the distilled run named ``name`` and notes on what was left out.

    ``options`` are the objective's options as resolved so far (after the user's overrides): the steps and
    the sampler follow from them. The teacher is expected at ``RUN_DIR/teacher.safetensors``.
    """
    method_module = module(method)
    data = copy.deepcopy(teacher.recipe.to_dict())
    run_dir = Path(data["run"]["output_dir"]) / name
    data["run"]["name"] = name
    objective = {"name": method, "teacher": (run_dir / TEACHER_FILE).as_posix(),
                 **method_module.objective_options(teacher, method)}
    if "conditioner" in data and "p_uncond" in data["conditioner"]:
        objective["p_uncond"] = data["conditioner"]["p_uncond"]
        data["conditioner"]["p_uncond"] = 0.0
    guided = {k: v for k, v in data.get("sampler", {}).items() if k.startswith("guidance")}
    if method in GUIDED and guided.get("guidance"):  # the teacher's w moves into the student
        objective["guidance"] = guided.pop("guidance")
        guided = {}
    data["objective"] = objective
    resolved = {**objective, **(options or {})}
    data["train"]["steps"] = method_module.train_steps(resolved)
    few = method_module.sampler(resolved)
    data["train"]["preview_steps"] = few["steps"]
    data["sampler"] = {**few, **guided}
    if data.get("eval"):
        data["eval"]["sampler"], data["eval"]["steps"] = "", 0
    notes, tasks = [], []
    for task in data.get("tasks", []):
        if task["name"] not in TASKS:
            notes.append(f"task {task['name']!r} is left out: it samples from a state other than pure noise, which "
                         f"a {method} student is not trained for")
            continue
        tasks.append({k: v for k, v in task.items() if k not in SAMPLING_KEYS})
    data["tasks"] = tasks
    return data, notes
