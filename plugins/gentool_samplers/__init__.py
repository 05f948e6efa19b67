"""Built-in samplers of the reverse process."""

import gentool

from gentool_samplers.ancestral import ancestral


@gentool.hookimpl
def gentool_register_samplers(register):
    register("ancestral", ancestral)
