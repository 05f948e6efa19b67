"""The ``gentool`` command group with the commands plugins add (``gentool_register_commands``).

A plugin registers a plain Typer command function; it is turned into a click
command only when ``gentool --help`` lists the commands or the user runs it,
so starting ``gentool run`` never loads a plugin command. A built-in command's
name always wins over a plugin's. Plugin commands print user errors
(:class:`gentool.errors.GentoolError`) as one ``error:`` line, like the built-in ones.
"""

from __future__ import annotations

from typing import Callable

import click
from typer.core import TyperGroup

PANEL = "Plugin commands"


def _plugin_commands() -> dict:
    from gentool.plugins import commands  # loads only the command hooks (see gentool.plugins.commands)

    return commands()


def to_click(name: str, function, rich_markup_mode=None, *, wrap: Callable = lambda fn: fn) -> click.Command:
    """A plugin's Typer command function, wrapped by ``wrap``, as a click command named ``name``."""
    from typer.main import get_command_from_info  # typer's builder: only when a plugin command is listed or run
    from typer.models import CommandInfo

    info = CommandInfo(name=name, callback=wrap(function), rich_help_panel=PANEL)
    return get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=rich_markup_mode)


class PluginCommandsGroup(TyperGroup):
    """gentool's own commands, then the plugins' (in order of their names)."""

    #: wraps each plugin command; :mod:`gentool.cli.app` sets its error handling (``friendly``),
    #: so this module needs no import of the app that uses it
    wrap: Callable = staticmethod(lambda fn: fn)

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = super().list_commands(ctx)
        return own + sorted(name for name in _plugin_commands() if name not in self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        own = super().get_command(ctx, cmd_name)
        if own is not None:
            return own
        component = _plugin_commands().get(cmd_name)
        if component is None:
            return None
        return to_click(cmd_name, component.factory, self.rich_markup_mode, wrap=self.wrap)


__all__ = ["PANEL", "PluginCommandsGroup", "to_click"]
