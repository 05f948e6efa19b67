"""Check a table of options against a factory's keyword-only signature.

One place holds each default: the factory's signature. This module reads the
signature (``inspect`` and ``typing.get_type_hints``) to reject unknown keys,
wrong types and missing required options, and to fill in the defaults.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

from gentool.errors import GentoolError
from gentool.registry import closest


class OptionError(GentoolError, ValueError):
    """A bad option: ``key`` is the option's name, ``message`` says what is wrong."""

    def __init__(self, key: str, message: str, value: Any = None, choices: list[str] | None = None):
        super().__init__(message)
        self.key = key
        self.message = message
        self.value = value
        self.choices = choices or []


def recipe_parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of ``factory``: its recipe options."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    sig = inspect.signature(target)
    return {
        name: p
        for name, p in sig.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable hints are simply not checked
        return {}


def describe(annotation: Any) -> str:
    """A short human name for an annotation (``int``, ``list[int]``, ``'a' | 'b'``)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "any value"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(describe(a) for a in args if a is not type(None))
    if origin in (list, tuple):
        return f"list of {describe(args[0])}" if args else "list"
    return getattr(annotation, "__name__", str(annotation))


LIST_EXAMPLES = {int: "[1, 2]", float: "[0.5, 1.0]", str: '["a", "b"]', bool: "[true, false]"}


def list_example(annotation: Any) -> str:
    """A list option's value in TOML syntax (``[1, 2]`` for ``list[int]``); ``""`` for other options."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return next((e for e in map(list_example, args) if e), "")
    if origin in (list, tuple):
        return LIST_EXAMPLES.get(args[0] if args else int, "")
    return ""


def matches(value: Any, annotation: Any) -> bool:
    """Does a TOML value fit ``annotation``? (Unknown annotations accept anything.)"""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (Union, types.UnionType):
        if value is None:  # an Optional option's None default, checked again once resolved (TOML has no None)
            return type(None) in args
        return any(matches(value, a) for a in args if a is not type(None))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],)
        if origin is tuple and len(args) > 1:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        return all(matches(v, args[0]) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation in (str, Path):
        return isinstance(value, str)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def literal_choices(annotation: Any) -> list[str]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return [repr(a) for a in typing.get_args(annotation)]
    if origin in (Union, types.UnionType):
        return [c for a in typing.get_args(annotation) for c in literal_choices(a)]
    return []


INT64 = (-(2**63), 2**63 - 1)  # TOML's integers are 64-bit; Python's parser takes any size


def out_of_range(value: Any) -> str:
    """Why a TOML value can never be a sane option (a non-finite float, an int past 64 bits), or ``""``.

    Lists and tables are searched; the first problem is described. An option
    whose value equals its factory's own default is not asked
    (:func:`check_options`): ``s_tmax = inf`` is how a factory says "no upper
    limit", and the resolved recipe writes it back as TOML's ``inf``.
    """
    if isinstance(value, bool):
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return f"{value} is out of range: integers must fit in 64 bits (at most {INT64[1]:,})"
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return next((problem for problem in map(out_of_range, items) if problem), "")


def is_default(value: Any, default: Any) -> bool:
    """Whether ``value`` is the default the factory declared (the same type and value; lists as lists).

    The resolved recipe holds every default, so what a signature declares must
    load again (``Recipe.dumps`` -> ``load_recipe``), even a non-finite one.
    """
    if isinstance(default, tuple):
        default = list(default)  # TOML has no tuples: a tuple default is written and read back as a list
    if isinstance(value, tuple):
        value = list(value)
    return type(value) is type(default) and value == default


def check_options(
    factory: Callable[..., Any],
    options: dict[str, Any],
    *,
    reserved: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Validate ``options`` against ``factory``'s keyword-only parameters.

    Returns the options with every default filled in (``None`` defaults
    included). Raises :class:`OptionError` for the first unknown key, wrong
    type, value out of range (:func:`out_of_range`, unless it is the
    factory's own default) or missing required option. ``reserved`` names keyword parameters
    the core supplies itself: they are neither accepted nor reported.
    """
    params = {k: v for k, v in recipe_parameters(factory).items() if k not in reserved}
    hints = type_hints(factory)
    for key, value in options.items():
        if key not in params:
            near = closest(key, params)
            hint = f"did you mean {' or '.join(map(repr, near))}? " if near else ""
            valid = ", ".join(sorted(params)) or "none"
            raise OptionError(key, f"unknown key {key!r}; {hint}valid keys: {valid}", value, near)
        annotation = hints.get(key, params[key].annotation)
        if not matches(value, annotation):
            choices = literal_choices(annotation)
            want = f"one of {', '.join(choices)}" if choices else describe(annotation)
            example = list_example(annotation)
            if example and not choices:
                want += f", e.g. {example}"  # --set denoiser.channel_mult=1,2 is the string "1,2"
            strings = [c[1:-1] for c in choices if c[:1] in "'\""]  # the reprs of the string choices
            near = closest(value, strings) if isinstance(value, str) else []
            hint = f"did you mean {' or '.join(map(repr, near))}? " if near else ""
            raise OptionError(key, f"{value!r} is not valid: {hint}expected {want}", value, choices)
        problem = out_of_range(value)
        if problem and not is_default(value, params[key].default):
            raise OptionError(key, problem, value)
    resolved: dict[str, Any] = {}
    for key, p in params.items():
        if key in options:
            resolved[key] = options[key]
        elif p.default is inspect.Parameter.empty:
            raise OptionError(key, f"missing required option {key!r} ({describe(hints.get(key, p.annotation))})")
        else:
            resolved[key] = p.default
    return resolved


def option_docs(factory: Callable[..., Any]) -> dict[str, str]:
    """``{option: description}`` from the ``Args:`` block of the factory's docstring."""
    target = factory
    doc = inspect.getdoc(target) or ""
    if inspect.isclass(factory) and not doc:
        doc = inspect.getdoc(factory.__init__) or ""
    out: dict[str, str] = {}
    in_args = False
    current = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if not in_args:
            continue
        if stripped and not line.startswith((" ", "\t")):
            break  # the next section
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        head, sep, rest = stripped.partition(":")
        name = head.split("(")[0].strip()
        if sep and indent <= 4 and name.isidentifier():
            current = name
            out[current] = rest.strip()
        elif current:
            out[current] = (out[current] + " " + stripped).strip()
    return out
