"""Built-in noise schedules: linear, cosine and sigmoid.

The component modules (and torch) are imported when the hook runs or a name
is first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

import gentool
from gentool import lazy_names

_load, __getattr__ = lazy_names(globals(), {"linear": ".linear", "cosine": ".cosine", "sigmoid": ".sigmoid"})


@gentool.hookimpl
def gentool_register_schedules(register):
    for name, factory in _load().items():
        register(name, factory, default=name == "linear")  # a recipe without [schedule]: Ho et al.'s
