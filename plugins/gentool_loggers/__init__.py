"""Built-in loggers: ``jsonl`` (``metrics.jsonl`` in the run directory) and ``console``."""

import gentool


@gentool.hookimpl
def gentool_register_loggers(register):
    from gentool_loggers.console import console
    from gentool_loggers.jsonl import jsonl

    register("jsonl", jsonl)
    register("console", console)
