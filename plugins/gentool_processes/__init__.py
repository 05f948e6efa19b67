"""Built-in noise processes: ``vp``, the discrete DDPM chain of Ho et al. (2020) over a ``[schedule]``'s betas."""

import gentool
from gentool import lazy_names

_load, __getattr__ = lazy_names(globals(), {"vp": ".vp"})


@gentool.hookimpl
def gentool_register_processes(register):
    for name, factory in _load().items():
        register(name, factory, default=name == "vp")  # a recipe without [process]: the DDPM chain
