"""Built-in training objectives: ``ddpm`` (L_simple, Ho et al. 2020) and ``hybrid`` (Nichol and Dhariwal 2021)."""

import gentool


@gentool.hookimpl
def gentool_register_objectives(register):
    from gentool_objectives.ddpm import ddpm  # imports torch: only when the objectives are asked for
    from gentool_objectives.hybrid import hybrid

    register("ddpm", ddpm, default=True)  # a recipe without [objective]: L_simple
    register("hybrid", hybrid)
