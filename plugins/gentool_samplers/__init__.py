"""Built-in samplers of the reverse process.

The sampler modules (and torch) are imported when the hook runs or a name is
first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

import gentool

_NAMES = ("ancestral", "ddim", "dpmpp_2m", "euler", "heun")


def _load() -> dict:
    from gentool_samplers.ancestral import ancestral
    from gentool_samplers.ddim import ddim
    from gentool_samplers.dpm_solver import dpmpp_2m
    from gentool_samplers.karras import euler, heun

    names = {"ancestral": ancestral, "ddim": ddim, "dpmpp_2m": dpmpp_2m, "euler": euler, "heun": heun}
    globals().update(names)  # the functions, not the submodules of the same names
    return names


def __getattr__(name: str):
    if name in _NAMES:
        return _load()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@gentool.hookimpl
def gentool_register_samplers(register):
    for name, factory in _load().items():
        register(name, factory, default=name == "ancestral")  # a recipe without [sampler]: DDPM's own
