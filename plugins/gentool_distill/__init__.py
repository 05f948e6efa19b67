"""Built-in distillation (``gentool distill``): few-step students of a trained model.

Each method is an objective that holds a frozen teacher (its ``draw`` and
``loss`` use the teacher; the train loop, checkpoints, lock, resume and logs
are the engine's):

* ``progressive``: progressive distillation (Salimans and Ho 2022), VP processes;
* ``consistency``: consistency distillation (Song et al. 2023), sigma processes;
* ``ect``: easy consistency tuning (Geng et al. 2024), sigma processes;
* ``reflow``: reflow (Liu et al. 2022), the rectified-flow path.

The sampler ``consistency`` is Song et al.'s multistep consistency sampling.
The modules (and torch) are imported when a hook runs or a name is first used.
"""

import gentool
from gentool import lazy_names

_load, __getattr__ = lazy_names(globals(), {
    "progressive": ".progressive", "consistency": ".consistency", "ect": ".ect", "reflow": ".reflow"})


@gentool.hookimpl
def gentool_register_objectives(register):
    for name, factory in _load().items():
        register(name, factory)


@gentool.hookimpl
def gentool_register_samplers(register):
    from gentool_distill.sampler import consistency  # imports torch: only when the samplers are asked for

    register("consistency", consistency)


@gentool.hookimpl
def gentool_register_commands(register):
    from gentool_distill.command import distill  # typer only; torch loads when the command runs

    register("distill", distill)
