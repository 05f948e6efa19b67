"""An example gentool plugin: a schedule, a sampler, an objective, a logger and a command."""

import gentool

from gentool_example.heun import heun
from gentool_example.quadratic import quadratic


@gentool.hookimpl
def gentool_register_schedules(register):
    register("quadratic", quadratic)


@gentool.hookimpl
def gentool_register_samplers(register):
    register("example_heun", heun)  # "heun" is a built-in sampler


@gentool.hookimpl
def gentool_register_objectives(register):
    from gentool_example.pseudo_huber import pseudo_huber

    register("pseudo_huber", pseudo_huber)


@gentool.hookimpl
def gentool_register_loggers(register):
    from gentool_example.csv_logger import csv_logger

    register("csv", csv_logger)


@gentool.hookimpl
def gentool_register_commands(register):
    from gentool_example.commands import quadratic_betas

    register("quadratic-betas", quadratic_betas)
