"""The registry: ``{kind: {name: Component}}`` filled by plugins' hooks."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from gentool.errors import GentoolError
from gentool.kinds import NAMES as KINDS


class RegistryError(GentoolError, LookupError):
    """An unknown kind or name, or a name registered twice."""


@dataclass(frozen=True)
class Component:
    """One registered factory and the plugin that registered it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str

    @property
    def doc(self) -> str:
        """The factory's docstring (the recipe reference for its options)."""
        return inspect.getdoc(self.factory) or ""

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""


def closest(name: str, choices) -> list[str]:
    """Up to three valid names closest to a misspelt ``name``, ignoring case (``DDIM``: ``ddim``)."""
    by_lower: dict[str, list[str]] = {}
    for choice in sorted(choices):
        by_lower.setdefault(choice.lower(), []).append(choice)
    if name.lower() in by_lower:  # only the case is wrong: that is the one
        return by_lower[name.lower()][:3]
    near = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
    return [choice for lower in near for choice in by_lower[lower]][:3]


class Registry:
    """Registered components of every kind, with the plugin each came from."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._defaults: dict[str, str] = {}  # kind -> the name a plugin declared its default
        #: "name (error)" of each plugin that failed to load: an unknown name may be theirs
        self.failed_plugins: list[str] = []

    def add(self, kind: str, name: str, factory: Callable[..., Any], plugin: str, *, default: bool = False) -> None:
        """Register ``factory`` as ``kind``/``name``; a second plugin using the name fails.

        ``default``: the plugin declares it the component a recipe without a
        table of this kind gets (``[schedule]``, ``[sampler]``, ...); one per kind.
        """
        if kind not in self._items:
            raise RegistryError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        if not callable(factory):
            raise RegistryError(f"{plugin}: {kind} {name!r} is not callable: {factory!r}")
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{plugin}: a {kind} must be registered under a non-empty string name")
        previous = self._items[kind].get(name)
        if previous is not None:
            raise RegistryError(
                f"{kind} {name!r} is registered twice: by plugin {previous.plugin!r} "
                f"and by plugin {plugin!r}; block one of them (GENTOOL_BLOCK_PLUGINS) "
                "or rename its component"
            )
        if default and self._defaults.get(kind, name) != name:
            first = self._items[kind][self._defaults[kind]]
            raise RegistryError(f"{plugin}: {kind} {name!r} is declared the default {kind}, but plugin "
                                f"{first.plugin!r} already declared {first.name!r}; a kind has one default")
        self._items[kind][name] = Component(kind, name, factory, plugin)
        if default:
            self._defaults[kind] = name

    def get(self, kind: str, name: str) -> Component:
        """The component ``kind``/``name``; an unknown name lists the closest ones."""
        try:
            table = self._items[kind]
        except KeyError:
            raise RegistryError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}") from None
        if name not in table:
            near = closest(name, table)
            hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
            valid = ", ".join(sorted(table)) or "none registered"
            failed = ""
            if self.failed_plugins:
                failed = (f"; note that plugin(s) failed to load and registered nothing: "
                          f"{'; '.join(self.failed_plugins)} (`gentool list-plugins --verbose` shows why)")
            raise RegistryError(f"unknown {kind} {name!r}{hint} (valid: {valid}){failed}")
        return table[name]

    def default(self, kind: str) -> str | None:
        """The name of the component a plugin declared the default of ``kind``, if any."""
        return self._defaults.get(kind)

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def components(self, kind: str | None = None) -> list[Component]:
        kinds = KINDS if kind is None else (kind,)
        return [self._items[k][n] for k in kinds for n in sorted(self._items[k])]

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        return name in self._items.get(kind, {})
