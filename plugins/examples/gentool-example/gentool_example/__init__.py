"""An example gentool plugin: the ``quadratic`` schedule and the ``example_heun`` sampler."""

import gentool

from gentool_example.heun import heun
from gentool_example.quadratic import quadratic


@gentool.hookimpl
def gentool_register_schedules(register):
    register("quadratic", quadratic)


@gentool.hookimpl
def gentool_register_samplers(register):
    register("example_heun", heun)  # "heun" is a built-in sampler
