"""Built-in commands added through the command hook: ``gentool compare``, ``gentool ema`` and ``gentool sweep``."""

import gentool


@gentool.hookimpl
def gentool_register_commands(register):
    from gentool_commands.compare import compare
    from gentool_commands.ema import ema
    from gentool_commands.sweep import sweep

    register("compare", compare)
    register("ema", ema)
    register("sweep", sweep)
