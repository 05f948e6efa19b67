"""Built-in flow matching (Lipman et al. 2022; Liu et al. 2022; Esser et al. 2024): process ``flow``, objective
``flow_matching`` and its ``velocity`` parameterisation.

The modules (and torch) are imported when a hook runs or a name is first used.
"""

import gentool
from gentool import lazy_names

_load, __getattr__ = lazy_names(globals(), {"flow": ".process", "flow_matching": ".objective"})


@gentool.hookimpl
def gentool_register_processes(register):
    register("flow", _load()["flow"])


@gentool.hookimpl
def gentool_register_objectives(register):
    register("flow_matching", _load()["flow_matching"])
