"""Built-in tasks that ``gentool run`` and the CLI execute."""

import gentool

from gentool_tasks.animate import animate
from gentool_tasks.class_grid import class_grid
from gentool_tasks.guidance_sweep import guidance_sweep
from gentool_tasks.inpaint import inpaint
from gentool_tasks.invert import invert
from gentool_tasks.interpolate import interpolate
from gentool_tasks.sample import sample
from gentool_tasks.schedules_plot import schedules
from gentool_tasks.variations import variations


@gentool.hookimpl
def gentool_register_tasks(register):
    register("sample", sample)
    register("class_grid", class_grid)
    register("guidance_sweep", guidance_sweep)
    register("inpaint", inpaint)
    register("interpolate", interpolate)
    register("variations", variations)
    register("animate", animate)
    register("schedules", schedules)
    register("invert", invert)


@gentool.hookimpl
def gentool_register_commands(register):
    from gentool.cli.tasks_cmd import task_command  # typer only; the tasks and torch load when a command runs
    from gentool_tasks.commands import RUN_TASKS, schedules
    from gentool_tasks.invert_cmd import invert

    for name, summary in RUN_TASKS.items():
        register(name, task_command(name, summary))
    register("schedules", schedules)
    register("invert", invert)
