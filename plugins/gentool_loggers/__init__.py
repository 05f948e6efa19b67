"""Built-in loggers: ``jsonl`` (``metrics.jsonl`` in the run directory), ``console`` and ``tensorboard``."""

import gentool


@gentool.hookimpl
def gentool_register_loggers(register):
    from gentool_loggers.console import console
    from gentool_loggers.jsonl import jsonl
    from gentool_loggers.tensorboard import tensorboard

    register("jsonl", jsonl)
    register("console", console)
    register("tensorboard", tensorboard)
