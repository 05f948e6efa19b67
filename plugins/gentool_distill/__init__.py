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

_load, __getattr__ = lazy_names(globals(), {"progressive": ".progressive"})


@gentool.hookimpl
def gentool_register_objectives(register):
    names = _load()
    register("progressive", names["progressive"])
