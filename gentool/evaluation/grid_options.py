"""The command line of an evaluation grid: comma lists into :class:`gentool.evaluation.grid.Axes`, and its defaults.

``gentool eval RUN --ema 0.05,0.1 --guidance 0,1,2 --sampler dpmpp_2m,heun --steps 10,20``
evaluates every combination. It is a grid (not today's single evaluation)
when ``--ema``, ``--guide-with``, ``--guidance-kind`` or ``--interval`` is
given, when ``--sampler`` or ``--steps`` lists several values, or with
``--grid``; several ``--guidance`` weights alone keep the single evaluation's
``by_guidance`` report.
"""

from __future__ import annotations

from typing import Any, Callable

from gentool.errors import UsageError

AUTO_DEFAULT = "auto"


def split(text: str | None) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()] if text is not None else []


def numbers(text: str | None, flag: str, kind: Callable[[str], Any], example: str) -> list[Any]:
    """``"10,20"`` -> ``[10, 20]``; a bad value names the flag and an example."""
    try:
        values = [kind(v) for v in split(text)]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated numbers, e.g. {example}") from None
    if text is not None and not values:
        raise UsageError(f"{flag} {text!r}: names no value, e.g. {example}")
    return values


def ema_lengths(text: str | None) -> list[float | None]:
    """``--ema 0.05,0.1,run``: post-hoc EMA sigma_rels; ``run`` is the checkpoint's own EMA."""
    out: list[float | None] = []
    for part in split(text):
        if part == "run":
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise UsageError(f"--ema {text!r}: expected sigma_rels such as 0.05,0.1 (and run: the checkpoint's "
                             "own EMA)") from None
    return out or [None]


def intervals(text: str | None) -> list[tuple[float, float] | None]:
    """``--interval all,0.28:2.9``: where guidance applies, in Karras' sigma = sigma / alpha; ``all``: everywhere."""
    out: list[tuple[float, float] | None] = []
    for part in split(text):
        if part in ("all", "none"):
            out.append(None)
            continue
        lo, sep, hi = part.partition(":")
        try:
            pair = (float(lo), float(hi))
        except ValueError:
            pair = None
        if not sep or pair is None or not 0 <= pair[0] < pair[1]:
            raise UsageError(f"--interval {part!r}: expected LO:HI with 0 <= LO < HI (Karras' sigma = sigma / "
                             "alpha), or all")
        out.append(pair)
    return out or [None]


def kinds(text: str | None, guide_with: Any) -> list[str]:
    """``--guidance-kind cfg,auto``; default auto with ``--guide-with``, else cfg."""
    values = split(text) or [AUTO_DEFAULT if guide_with is not None else "cfg"]
    bad = [k for k in values if k not in ("cfg", "auto")]
    if bad:
        raise UsageError(f"--guidance-kind {','.join(bad)}: choose cfg (classifier-free) or auto (autoguidance, "
                         "with --guide-with)")
    if "auto" in values and guide_with is None:
        raise UsageError("--guidance-kind auto needs --guide-with, the weaker model (e.g. an earlier checkpoint)")
    return values


def is_grid(*, ema, guide_with, guidance_kind, interval, samplers: list[str], steps: list[int], grid: bool) -> bool:
    """Whether ``gentool eval`` runs a grid (see the module docstring)."""
    return grid or any(v is not None for v in (ema, guide_with, guidance_kind, interval)) \
        or len(samplers) > 1 or len(steps) > 1


def feature_extractor(run, given: str | None) -> str | None:
    """``--feature-extractor``, else the recipe's when it chose one, else a registered extractor made for the
    run's image shape (its factory's ``image_shape``, e.g. gentool-cnn28's 1x28x28); None: the recipe's."""
    from gentool.config import EvalConfig

    if given is not None:
        return given
    default = EvalConfig().feature_extractor
    if getattr(run.recipe.eval, "feature_extractor", default) != default:
        return None
    fitting = [name for name in run.registry.names("feature_extractor")
               if tuple(getattr(run.registry.get("feature_extractor", name).factory, "image_shape", ()) or ())
               == tuple(run.image_shape)]
    return fitting[0] if fitting else None


def metrics(run, given: str | None) -> str | None:
    """``--metrics``, else FID and IS, and class accuracy for a class-conditional run."""
    if given is not None:
        return given
    return "fid,isc,class_acc" if run.num_classes else "fid,isc"
