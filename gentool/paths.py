"""Suggestions for a mistyped path (``runs/fashion-mnist`` when ``runs/fashion_mnist`` exists), and the one
message for a missing recipe file or run: checked by the command line before it imports torch, so that a
typo is reported at once, not after torch's import (seconds on a busy machine)."""

from __future__ import annotations

from pathlib import Path


def closest_paths(path: str | Path, limit: int = 3) -> list[Path]:
    """Existing siblings whose names are close to the missing ``path``'s last part (the first missing one)."""
    import difflib

    path = Path(path)
    parts = list(path.parts)
    for i in range(len(parts)):  # the first part that does not exist is the typo
        head = Path(*parts[: i + 1])
        if not head.exists():
            parent = Path(*parts[:i]) if i else Path(".")
            break
    else:
        return []
    try:
        names = [p.name for p in parent.iterdir()]
    except OSError:
        return []
    by_lower = {n.lower(): n for n in names}
    near = difflib.get_close_matches(head.name.lower(), list(by_lower), n=limit, cutoff=0.6)
    rest = parts[i + 1:]
    return [parent.joinpath(by_lower[n], *rest) if i else Path(by_lower[n], *rest) for n in near]


def did_you_mean(path: str | Path) -> str:
    """``"; did you mean runs/fashion_mnist?"`` or ``""``."""
    near = closest_paths(path)
    if not near:
        return ""
    return "; did you mean " + " or ".join(str(p) for p in near) + "?"


def require_recipe(path: str | Path) -> Path:
    """``path`` when it exists; else FileNotFoundError ``PATH: no such recipe file`` (with a suggestion)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such recipe file{did_you_mean(path)}")
    return Path(path)


def require_run(path: str | Path) -> Path:
    """``path`` when it exists; else FileNotFoundError ``PATH: no such run directory or checkpoint``."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such run directory or checkpoint{did_you_mean(path)}")
    return Path(path)
