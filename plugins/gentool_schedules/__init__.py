"""Built-in noise schedules: linear, cosine and sigmoid.

The component modules (and torch) are imported when the hook runs or a name
is first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

import gentool

_NAMES = ("linear", "cosine", "sigmoid")


def _load() -> dict:
    from gentool_schedules.cosine import cosine
    from gentool_schedules.linear import linear
    from gentool_schedules.sigmoid import sigmoid

    names = {"linear": linear, "cosine": cosine, "sigmoid": sigmoid}
    globals().update(names)  # the functions, not the submodules of the same names
    return names


def __getattr__(name: str):
    if name in _NAMES:
        return _load()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@gentool.hookimpl
def gentool_register_schedules(register):
    for name, factory in _load().items():
        register(name, factory, default=name == "linear")  # a recipe without [schedule]: Ho et al.'s
