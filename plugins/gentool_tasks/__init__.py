"""Built-in tasks that ``gentool run`` and the CLI execute.

The task modules (and torch) are imported when the hook runs or a name is
first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

import gentool
from gentool import lazy_names

_load, __getattr__ = lazy_names(globals(), {
    "sample": ".sample", "class_grid": ".class_grid", "guidance_sweep": ".guidance_sweep", "inpaint": ".inpaint",
    "interpolate": ".interpolate", "variations": ".variations", "animate": ".animate", "schedules": ".schedules_plot",
    "invert": ".invert"})


@gentool.hookimpl
def gentool_register_tasks(register):
    for name, factory in _load().items():
        register(name, factory)


@gentool.hookimpl
def gentool_register_commands(register):
    from gentool import task_command  # typer only; the tasks and torch load when a command runs
    from gentool_tasks.commands import RUN_TASKS, schedules
    from gentool_tasks.invert_cmd import invert
    from gentool_tasks.sample_cmd import sample

    register("sample", sample)
    for name, summary in RUN_TASKS.items():
        register(name, task_command(name, summary))
    register("schedules", schedules)
    register("invert", invert)
