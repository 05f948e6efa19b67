"""Compatibility before compute: components of a recipe that do not fit together are refused in one line.

``gentool check`` and ``gentool run`` (and loading a run) call
:func:`check_recipe` once the process and the objective are built, before
any network is: each refusal names both sides, e.g. the objective's
parameterisation and the process, or a sampler and the process. What fits is
asked of the components themselves:

* ``parameterisation.check(process)`` (e.g. a noise prediction where alpha
  reaches 0, zero terminal SNR or flow matching's t = 1);
* ``objective.check(process)`` (an objective without one runs on the
  discrete chain only: it predates processes);
* ``sampler.supports(process)`` where a sampler has one (samplers written for
  the discrete chain's ``eps_fn`` run only on it), and
  ``sampler.fits_objective(objective)`` (a consistency sampler samples only a
  consistency model);
* a learned variance and bits/dim need the discrete chain (``process.discrete``
  with its posterior);
* every sampling step count fits the discrete chain's T.
"""

from __future__ import annotations

from typing import Any

from gentool.legacy import is_legacy_sampler
from gentool.parameterisation import parameterisation_of
from gentool.process import Process
from gentool.recipe import Recipe, RecipeError
from gentool.registry import Registry


def _is_chain(process: Process) -> bool:
    """The discrete DDPM chain (integer steps with its posterior and variational bound)."""
    return bool(getattr(process, "discrete", False)) and hasattr(process, "posterior_variance")


def _process_name(recipe: Recipe) -> str:
    return f"process {recipe.process.name!r}"


def sampler_fits(factory: Any, process: Process, objective: Any = None) -> str | None:
    """Why a sampler cannot run on ``process`` (None: it can); with ``objective``, also why it cannot sample a
    model trained by it (the sampler's optional ``fits_objective(objective)``, e.g. a consistency sampler)."""
    fits = getattr(factory, "fits_objective", None)
    if objective is not None and callable(fits):
        why = fits(objective)
        if why:
            return why
    if is_legacy_sampler(factory):
        if not _is_chain(process):
            return ("it is written for the discrete DDPM chain (its first parameters are eps_fn and diffusion), "
                    "so it runs only there")
        return None
    supports = getattr(factory, "supports", None)
    return supports(process) if callable(supports) else None


def check_sampler(recipe: Recipe, registry: Registry, process: Process, name: str, key: str,
                  objective: Any = None) -> None:
    """Refuse the sampler ``name`` (named at recipe key ``key``) where it does not fit the process (or the model)."""
    if ("sampler", name) not in registry:
        return  # the recipe's validation names unknown samplers
    factory = registry.get("sampler", name).factory
    why = sampler_fits(factory, process)
    if why:
        raise RecipeError(recipe.source, key, f"sampler {name!r} cannot sample {_process_name(recipe)}: {why}", name)
    fits = getattr(factory, "fits_objective", None)
    why = fits(objective) if objective is not None and callable(fits) else None
    if why:
        raise RecipeError(recipe.source, key, f"sampler {name!r} cannot sample a model of objective "
                          f"{recipe.objective.name!r}: {why}", name)


def sampler_names(recipe: Recipe) -> list[tuple[str, str]]:
    """Every (recipe key, sampler name) the recipe samples with: [sampler], the tasks' and [eval]'s."""
    out = [("sampler.name", recipe.sampler.name)]
    for i, task in enumerate(recipe.tasks):
        if isinstance(task.options.get("sampler"), str) and task.options["sampler"]:
            out.append((f"tasks.{i}.sampler", task.options["sampler"]))
    if recipe.eval is not None and recipe.eval.sampler:
        out.append(("eval.sampler", recipe.eval.sampler))
    return out


def objective_fits(objective: Any, process: Process) -> str | None:
    """Why ``objective`` cannot train on ``process`` (None: it can).

    An objective says so with ``check(process)``; one without it was written
    before processes were components, so it is taken to need the discrete DDPM
    chain it was written for (``draw`` returning integer steps, the chain's
    ``q_sample``).
    """
    check = getattr(objective, "check", None)
    if callable(check):
        return check(process)
    if not _is_chain(process):
        return ("it has no check(process) saying which processes it trains, so it is taken to be written for "
                "the discrete DDPM chain (integer timesteps, the chain's q_sample) only")
    return None


def check_steps(recipe: Recipe, process: Process) -> None:
    """Every sampling step count of the recipe fits the discrete chain's T (checked before training, not after)."""
    T = getattr(process, "num_timesteps", None)
    if not getattr(process, "discrete", False) or T is None:
        return
    steps = recipe.sampler.steps
    if steps is not None and steps > T:
        raise RecipeError(recipe.source, "sampler.steps", f"{steps} is more than the schedule's T = {T} "
                          f"timesteps; use at most {T}, or leave steps out to take them all", steps)
    eval_steps = recipe.eval.steps if recipe.eval is not None else 0
    wanted = [("eval.steps", eval_steps)] + [(f"tasks.{i}.steps", t.options.get("steps"))
                                             for i, t in enumerate(recipe.tasks)]
    for key, value in wanted:
        if isinstance(value, int) and not isinstance(value, bool) and value > T:
            raise RecipeError(recipe.source, key, f"{value} is more than the schedule's T = {T} timesteps; "
                              f"use at most {T}", value)


def check_recipe(recipe: Recipe, registry: Registry, process: Process, objective: Any) -> None:
    """Refuse the recipe's components that do not fit together, naming both sides (see the module docstring)."""
    try:
        param = parameterisation_of(objective)
    except (TypeError, ValueError) as err:
        raise RecipeError(recipe.source, f"objective ({recipe.objective.name})", str(err)) from None
    check_steps(recipe, process)
    why = param.check(process)
    if why:
        key = "objective.prediction" if "prediction" in recipe.objective.options else f"objective ({recipe.objective.name})"
        raise RecipeError(recipe.source, key, f"{param.name!r} with {_process_name(recipe)}: {why}", param.name,
                          [n for n in ("v", "x0") if n != param.name])
    why = objective_fits(objective, process)
    if why:
        raise RecipeError(recipe.source, f"objective ({recipe.objective.name})",
                          f"objective {recipe.objective.name!r} cannot train {_process_name(recipe)}: {why}")
    if getattr(objective, "learned_variance", False) and not _is_chain(process):
        raise RecipeError(recipe.source, f"objective ({recipe.objective.name})",
                          f"objective {recipe.objective.name!r} learns the reverse variance of the discrete DDPM "
                          f"chain, and {_process_name(recipe)} is not that chain; use [process] name = \"vp\"")
    for key, name in sampler_names(recipe):
        check_sampler(recipe, registry, process, name, key, objective)
    if recipe.eval is not None and "bpd" in recipe.eval.metrics and not _is_chain(process):
        raise RecipeError(recipe.source, "eval.metrics", f"bpd (bits/dim, Ho et al. eq. 5) is defined by the "
                          f"discrete DDPM chain's variational bound, and {_process_name(recipe)} is not that chain; "
                          "remove bpd", recipe.eval.metrics)


def check_guidance(recipe: Recipe) -> None:
    """``[sampler] guidance`` needs a conditioner (the rule of :func:`gentool.sampling.resolve_sampling`)."""
    if recipe.conditioner is None and recipe.sampler.guidance != 0:
        raise RecipeError(recipe.source, "sampler.guidance", f"{recipe.sampler.guidance:g} needs a class-conditional "
                          "model, but the recipe has no [conditioner]; set guidance = 0 (or leave it out), or add a "
                          "[conditioner]", recipe.sampler.guidance)


def check_variance_output(recipe: Recipe, denoiser: Any, learned: bool) -> None:
    """A learned-variance objective needs a denoiser with 2C outputs (``learned_variance``), and only it."""
    outputs = bool(getattr(denoiser, "learned_variance", False))
    if learned and not outputs:
        raise RecipeError(recipe.source, "denoiser", f"objective {recipe.objective.name!r} learns the reverse "
                          f"variance, so the denoiser must output it too (2C channels); denoiser "
                          f"{recipe.denoiser.name!r} does not: set learn_sigma = true in [denoiser]")
    if outputs and not learned:
        raise RecipeError(recipe.source, "denoiser", f"the denoiser outputs a variance (learn_sigma = true) that "
                          f"objective {recipe.objective.name!r} does not train; use [objective] name = \"hybrid\" "
                          "or remove learn_sigma")
