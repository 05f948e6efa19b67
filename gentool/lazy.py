"""Public names of a plugin package imported on first use (PEP 562).

A built-in plugin package lists its components as ``{name: module}`` (each
module defines the name; a module may be relative to the package) and gets a
loader and a module ``__getattr__``, so importing the package (for ``gentool
--help``) imports neither its component modules nor torch::

    _load, __getattr__ = lazy_names(globals(), {"ddim": ".ddim", "dpmpp_2m": ".dpm_solver"})

Standard library only: a leaf module, below every other layer.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_names(namespace: dict[str, Any], table: dict[str, str]) -> tuple[Callable[[], dict], Callable[[str], Any]]:
    """``(load, __getattr__)`` for the module whose ``globals()`` is ``namespace``.

    ``load()`` imports the module of every name of ``table``, binds the objects
    in ``namespace`` (the functions, not the submodules of the same names) and
    returns ``{name: object}`` in the table's order; ``__getattr__`` loads on
    the first use of a name of the table.
    """

    def load() -> dict:
        names = {}
        for name, module in table.items():
            names[name] = getattr(importlib.import_module(module, namespace["__name__"]), name)
        namespace.update(names)
        return names

    def __getattr__(name: str) -> Any:
        if name in table:
            return load()[name]
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    return load, __getattr__
