"""The plugin manager: entry-point discovery, blocking and broken-plugin reports.

Plugins are found through entry points in the group ``gentool`` (the same name
as the pluggy project). Built-in plugins are entry points of the ``gentool``
distribution itself and are always loaded; third-party ones are loaded unless
``GENTOOL_DISABLE_PLUGIN_AUTOLOAD`` is set to a true value. A comma-separated
``GENTOOL_BLOCK_PLUGINS`` names plugins not to load, by entry-point name
(``schedules``) or distribution name (``gentool-example``).

A plugin that fails to import, implements an unknown hook, raises while
registering, or registers a name that another plugin already uses never breaks
the host: it is recorded in :attr:`PluginState.broken`, none of its components
are registered, and the rest works. Built-in plugins register first, then the
others in order of their names, so which of two clashing plugins wins never
depends on the order of ``sys.path``.
"""

from __future__ import annotations

import functools
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

import pluggy

from gentool import hookspecs
from gentool.errors import brief
from gentool.kinds import HOOK_PREFIX, KINDS
from gentool.registry import Registry, RegistryError, closest

PROJECT = "gentool"
#: kind -> the name of its collection hook (from the table of kinds)
HOOKS = {kind.name: kind.hook for kind in KINDS}
_TRUE = {"1", "true", "yes", "on"}


@dataclass
class PluginInfo:
    """One loaded plugin: its entry-point name, distribution and module."""

    name: str
    package: str
    version: str
    module: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)


@dataclass
class BrokenPlugin:
    """A plugin that could not be loaded or registered, with the reason."""

    name: str
    package: str
    version: str
    error: str
    detail: str = ""


@dataclass
class PluginState:
    manager: pluggy.PluginManager
    registry: Registry
    plugins: list[PluginInfo]
    broken: list[BrokenPlugin]
    blocked: list[str]


def autoload_disabled() -> bool:
    return os.environ.get("GENTOOL_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in _TRUE


def blocked_from_env() -> list[str]:
    raw = os.environ.get("GENTOOL_BLOCK_PLUGINS", "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def _entry_points() -> Iterable[metadata.EntryPoint]:
    seen: set[tuple[str, str, str]] = set()
    for ep in metadata.entry_points(group=PROJECT):
        key = (ep.name, ep.value, _dist(ep)[0])
        if key in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(key)
        yield ep


def _dist(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"], dist.version


def load_plugins(
    *,
    autoload: bool | None = None,
    blocked: Iterable[str] | None = None,
    extra: Iterable[tuple[str, Any]] = (),
    kinds: Iterable[str] | None = None,
) -> PluginState:
    """Discover, load and register all plugins; never raises for a bad plugin.

    Args:
        autoload: load third-party plugins (default: unless
            ``GENTOOL_DISABLE_PLUGIN_AUTOLOAD`` is set).
        blocked: entry-point names not to load (default: ``GENTOOL_BLOCK_PLUGINS``).
        extra: ``(name, plugin_object)`` pairs registered in addition, e.g. by tests.
        kinds: call only these kinds' hooks (default: all). The CLI asks for
            ``("command",)`` alone, which imports no component module.
    """
    autoload = (not autoload_disabled()) if autoload is None else autoload
    blocked = list(blocked_from_env() if blocked is None else blocked)
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    broken: list[BrokenPlugin] = []
    for name in blocked:
        pm.set_blocked(name)

    candidates: list[tuple[str, str, str, bool, Any]] = []
    claimed: dict[str, tuple[str, str]] = {}  # entry-point name -> (package, version) that holds it
    # built-ins first: a third-party entry point named like one ("schedules") never replaces it
    for ep in sorted(_entry_points(), key=lambda ep: _dist(ep)[0] != PROJECT):
        package, version = _dist(ep)
        builtin = package == PROJECT
        if (not builtin and not autoload) or ep.name in blocked or package in blocked:
            continue
        if ep.name in claimed:
            holder, held = claimed[ep.name]
            kept = "; gentool's built-in plugin is kept" if holder == PROJECT else ""
            error = (f"plugin name {ep.name!r} is used by two packages, {holder} {held} and "
                     f"{package} {version}{kept}; rename the entry point in {package}'s "
                     "[project.entry-points.gentool]")
            broken.append(BrokenPlugin(ep.name, package, version, error))
            continue
        claimed[ep.name] = (package, version)
        try:
            obj = ep.load()
        except BaseException as exc:  # noqa: BLE001 - a broken plugin must not break the host, even by sys.exit()
            if isinstance(exc, KeyboardInterrupt):
                raise  # the user's Ctrl-C
            broken.append(BrokenPlugin(ep.name, package, version, brief(exc), traceback.format_exc()))
            continue
        candidates.append((ep.name, package, version, builtin, obj))
    for name, obj in extra:
        candidates.append((name, "(registered in code)", "", False, obj))

    for name, package, version, builtin, obj in candidates:
        try:
            pm.register(obj, name=name)
        except Exception as exc:  # noqa: BLE001
            broken.append(BrokenPlugin(name, package, version, brief(exc), traceback.format_exc()))
            continue
        module = getattr(obj, "__name__", type(obj).__name__)
        hooks = [impl.name for impl in _impls(pm, obj)]
        infos.append(PluginInfo(name, package, version, module, builtin, hooks))
    while True:  # every plugin implementing an unknown (e.g. misspelt) hook is broken
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or "?"
            info = next((i for i in infos if i.name == name), None)
            unknown = [c.name for c in _impls(pm, exc.plugin) if not c.has_spec() and repr(c.name) in str(exc)]
            near = closest_hook(unknown[0]) if unknown else None
            error = brief(exc) + (f"; did you mean {near!r}?" if near else "")
            broken.append(BrokenPlugin(name, info.package if info else "?", info.version if info else "", error))
            pm.unregister(exc.plugin)
            infos = [i for i in infos if i.name != name]
    registry, reg_broken = _fill_registry(pm, {i.name: i for i in infos}, kinds)
    broken.extend(reg_broken)
    bad = {b.name for b in reg_broken}
    for name in bad:
        pm.unregister(name=name)
    infos = [i for i in infos if i.name not in bad]
    registry.failed_plugins = [f"{b.name} ({b.error})" for b in broken]
    return PluginState(pm, registry, infos, broken, blocked)


def closest_hook(name: str) -> str | None:
    """The gentool hook closest to a misspelt hook ``name`` (compared without their common prefix)."""
    prefix = HOOK_PREFIX
    short = {hook.removeprefix(prefix): hook for hook in HOOKS.values()}
    near = closest(name.removeprefix(prefix), short)
    return short[near[0]] if near else None


def _impls(pm: pluggy.PluginManager, plugin: Any) -> list[Any]:
    out = []
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                out.append(caller)
    return out


def _fill_registry(pm: pluggy.PluginManager, infos: dict[str, PluginInfo], kinds: Iterable[str] | None = None):
    """Call every plugin's collection hooks; a plugin that fails registers nothing.

    Built-in plugins go first, then the others by name.
    """
    registry = Registry()
    broken: list[BrokenPlugin] = []
    impls: dict[str, list[tuple[str, Any]]] = {}
    wanted = set(HOOKS if kinds is None else kinds)
    for kind, hook_name in HOOKS.items():
        if kind not in wanted:
            continue
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            impls.setdefault(impl.plugin_name, []).append((kind, impl.function))
    owner = {}  # (kind, name) -> plugin, for the duplicate message
    order = sorted(impls, key=lambda p: (not (p in infos and infos[p].builtin), p))
    for plugin in order:
        pending: list[tuple[str, str, Any, bool]] = []

        def register(name: str, factory: Any, *, default: bool = False, _kind: str = "") -> None:
            clash = owner.get((_kind, name)) or (plugin if (_kind, name) in {(k, n) for k, n, _, _ in pending} else None)
            if clash is not None:
                raise RegistryError(
                    f"{_kind} {name!r} is registered twice: by plugin {clash!r} ({_package(infos, clash)}) and by "
                    f"plugin {plugin!r} ({_package(infos, plugin)}); block one of them (GENTOOL_BLOCK_PLUGINS) "
                    "or rename its component"
                )
            pending.append((_kind, name, factory, bool(default)))

        try:
            for kind, function in impls[plugin]:
                function(register=functools.partial(register, _kind=kind))
            scratch = Registry()  # validates names, factories and defaults before anything is committed
            for kind, name, factory, default in pending:
                scratch.add(kind, name, factory, plugin, default=default)
                if default and registry.default(kind) is not None:  # built-ins come first: theirs stands
                    first = registry.get(kind, registry.default(kind))
                    raise RegistryError(f"{kind} {name!r} is declared the default {kind}, but plugin "
                                        f"{first.plugin!r} already declared {first.name!r}; a kind has one default")
        except BaseException as exc:  # noqa: BLE001 - includes RegistryError for duplicates, and sys.exit()
            if isinstance(exc, KeyboardInterrupt):
                raise
            info = infos.get(plugin)
            broken.append(BrokenPlugin(plugin, info.package if info else "?", info.version if info else "",
                                       brief(exc), traceback.format_exc()))
            continue
        for kind, name, factory, default in pending:
            registry.add(kind, name, factory, plugin, default=default)
            owner[(kind, name)] = plugin
    return registry, broken


def _package(infos: dict[str, PluginInfo], plugin: str) -> str:
    info = infos.get(plugin)
    return f"package {info.package} {info.version}".rstrip() if info else "registered in code"


_STATE: PluginState | None = None


def state() -> PluginState:
    """The process-wide plugin state, loaded on first use (never at import time)."""
    global _STATE
    if _STATE is None:
        _STATE = load_plugins()
    return _STATE


def registry() -> Registry:
    """The process-wide registry of every loaded plugin's components."""
    return state().registry


def commands() -> dict[str, Any]:
    """``{name: Component}`` of every plugin command (kind ``"command"``).

    Cheap when the plugins are not loaded yet: only the command hooks run, so
    ``gentool --help`` imports no component module (nor torch, where the
    plugins' own modules do not).
    """
    global _COMMANDS
    if _STATE is not None:
        return {c.name: c for c in _STATE.registry.components("command")}
    if _COMMANDS is None:
        _COMMANDS = load_plugins(kinds=("command",))
    return {c.name: c for c in _COMMANDS.registry.components("command")}


_COMMANDS: PluginState | None = None


def reset(new_state: PluginState | None = None) -> None:
    """Forget the loaded plugins (or install ``new_state``); for tests and notebooks."""
    global _STATE, _COMMANDS
    _STATE, _COMMANDS = new_state, None
