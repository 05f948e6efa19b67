"""Built-in samplers of the reverse process."""

import gentool

from gentool_samplers.ancestral import ancestral
from gentool_samplers.ddim import ddim
from gentool_samplers.dpm_solver import dpmpp_2m
from gentool_samplers.karras import euler, heun


@gentool.hookimpl
def gentool_register_samplers(register):
    register("ancestral", ancestral, default=True)  # a recipe without [sampler]: DDPM's own
    register("ddim", ddim)
    register("dpmpp_2m", dpmpp_2m)
    register("euler", euler)
    register("heun", heun)
