"""Built-in samplers of the reverse process.

The sampler modules (and torch) are imported when the hook runs or a name is
first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

import gentool
from gentool import lazy_names

_load, __getattr__ = lazy_names(globals(), {
    "ancestral": ".ancestral", "ddim": ".ddim", "dpmpp_2m": ".dpm_solver", "euler": ".karras", "heun": ".karras",
    "midpoint": ".midpoint", "euler_ancestral": ".stochastic", "dpmpp_2m_sde": ".stochastic"})


@gentool.hookimpl
def gentool_register_samplers(register):
    for name, factory in _load().items():
        register(name, factory, default=name == "ancestral")  # a recipe without [sampler]: DDPM's own
