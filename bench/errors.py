"""Errors the CLI reports as one clear line (no traceback) with a non-zero exit, and the one check of a
config's field values against their declared types."""

from __future__ import annotations

import dataclasses
import math
import types
import typing

ERROR_LOG_PREFIX = "mrfbench-error-"  # the CLI guard's traceback logs (a run directory may hold them)


class UsageError(ValueError):
    """Bad input from the user: unknown names, invalid values, missing or corrupt files."""


class SweepInterrupted(Exception):
    """A sweep stage ended with trials unfinished (Ctrl-C, or a lost worker): the sweep stops, to be resumed."""


SEED_RANGE = (0, 2**32 - 1)  # what NumPy and torch accept as a seed


def _matches(value, kind) -> bool:
    """Whether ``value`` has the declared type ``kind`` (int, float, str, bool, Literal, X | None, list)."""
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return value in typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(kind))
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind) if isinstance(kind, type) else True


def _choices(kind) -> tuple:
    """The values of a ``Literal`` type (also inside ``X | None``); empty for other types."""
    if typing.get_origin(kind) is typing.Literal:
        return typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return tuple(v for arg in typing.get_args(kind) for v in _choices(arg))
    return ()


def _describe(kind) -> str:
    if typing.get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(kind)))
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(kind))
    return {float: "a finite number", int: "an integer", str: "a string", bool: "true or false",
            type(None): "none"}.get(kind, getattr(kind, "__name__", str(kind)))


def check_fields(config) -> None:
    """Check every field of the dataclass ``config`` against its declared type (a float must be finite, an
    int not a bool, a Literal one of its values) and every ``seed`` field against the range seeds take."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, kind = getattr(config, field.name), hints.get(field.name)
        label = field.name.replace("_", " ")
        if kind is not None and not _matches(value, kind):
            choices = _choices(kind)
            if choices and isinstance(value, str):
                raise UsageError(f"unknown {label} '{value}'; valid: {', '.join(map(str, choices))}")
            raise UsageError(f"{label} must be {_describe(kind)}, got {value!r}")
        if field.name.endswith("seed") and isinstance(value, int):
            check_seed(value, label)


def check_seed(value: int, label: str = "seed") -> None:
    if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise UsageError(f"{label} must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {value}")
