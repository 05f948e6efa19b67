"""Built-in tasks that ``gentool run`` and the CLI execute."""

import gentool

from gentool_tasks.sample import sample


@gentool.hookimpl
def gentool_register_tasks(register):
    register("sample", sample)
