"""Built-in tasks that ``gentool run`` and the CLI execute.

The task modules (and torch) are imported when the hook runs or a name is
first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

import gentool

_NAMES = ("sample", "class_grid", "guidance_sweep", "inpaint", "interpolate", "variations", "animate", "schedules", "invert")


def _load() -> dict:
    from gentool_tasks.animate import animate
    from gentool_tasks.class_grid import class_grid
    from gentool_tasks.guidance_sweep import guidance_sweep
    from gentool_tasks.inpaint import inpaint
    from gentool_tasks.invert import invert
    from gentool_tasks.interpolate import interpolate
    from gentool_tasks.sample import sample
    from gentool_tasks.schedules_plot import schedules
    from gentool_tasks.variations import variations

    names = {"sample": sample, "class_grid": class_grid, "guidance_sweep": guidance_sweep, "inpaint": inpaint,
             "interpolate": interpolate, "variations": variations, "animate": animate, "schedules": schedules, "invert": invert}
    globals().update(names)  # the functions, not the submodules of the same names
    return names


def __getattr__(name: str):
    if name in _NAMES:
        return _load()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@gentool.hookimpl
def gentool_register_tasks(register):
    for name, factory in _load().items():
        register(name, factory)


@gentool.hookimpl
def gentool_register_commands(register):
    from gentool.cli.tasks_cmd import task_command  # typer only; the tasks and torch load when a command runs
    from gentool_tasks.commands import RUN_TASKS, schedules
    from gentool_tasks.invert_cmd import invert

    for name, summary in RUN_TASKS.items():
        register(name, task_command(name, summary))
    register("schedules", schedules)
    register("invert", invert)
