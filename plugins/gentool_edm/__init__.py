"""Built-in EDM (Karras et al. 2022) and VE (Song et al. 2021): processes ``edm`` and ``ve``, objective ``edm``
with its preconditioning.

The modules (and torch) are imported when a hook runs or a name is first used.
"""

import gentool
from gentool import lazy_names

_load, __getattr__ = lazy_names(globals(), {"edm": ".process", "ve": ".process", "edm_objective": ".objective"})


@gentool.hookimpl
def gentool_register_processes(register):
    names = _load()
    register("edm", names["edm"])
    register("ve", names["ve"])


@gentool.hookimpl
def gentool_register_objectives(register):
    register("edm", _load()["edm_objective"])
