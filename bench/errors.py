"""Errors the CLI reports as one clear line (no traceback) with a non-zero exit, and the one check of a
config's field values against their declared types and bounds."""

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


def first_line(err: BaseException) -> str:
    """An error's reason in one line: its message's first (a distribution's refusal carries a tensor dump),
    or its type where it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
          "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def bounded(default, *, ge=None, gt=None, le=None, lt=None, label: str | None = None, why: str | None = None):
    """A dataclass field whose value ``check_fields`` keeps within its bounds (``ge``: >=, ``gt``: >, ``le``:
    <=, ``lt``: <); ``label`` names it in the error (its name with spaces by default), ``why`` explains it."""
    given = {"ge": ge, "gt": gt, "le": le, "lt": lt, "label": label, "why": why}
    return dataclasses.field(default=default, metadata={k: v for k, v in given.items() if v is not None})


def _bounds_text(metadata) -> str:
    """The bounds of a field as its error says them: ">= 1", "> 0", "in [0, 1)"."""
    low = next(((k, metadata[k]) for k in ("ge", "gt") if k in metadata), None)
    high = next(((k, metadata[k]) for k in ("le", "lt") if k in metadata), None)
    if low and high:
        return f"in {'[' if low[0] == 'ge' else '('}{low[1]:g}, {high[1]:g}{']' if high[0] == 'le' else ')'}"
    kind, bound = low or high
    return f"{BOUNDS[kind][0]} {bound:g}"


def _metadata(cls: type, name: str):
    """A field's bounds and label as the nearest class that declares them has them (a subclass that only
    changes the default keeps its base's bounds)."""
    for klass in cls.__mro__:
        field = getattr(klass, "__dataclass_fields__", {}).get(name)
        if field is not None and field.metadata:
            return field.metadata
    return {}


def check_fields(config) -> None:
    """Check every field of the dataclass ``config`` against its declared type (a float must be finite, an
    int not a bool, a Literal one of its values) and its bounds (``bounded``), and every ``seed`` field
    against the range seeds take."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, kind, metadata = getattr(config, field.name), hints.get(field.name), _metadata(type(config), field.name)
        label = metadata.get("label", field.name.replace("_", " "))
        if kind is not None and not _matches(value, kind):
            choices = _choices(kind)
            if choices and isinstance(value, str):
                raise UsageError(f"unknown {label} '{value}'; valid: {', '.join(map(str, choices))}")
            raise UsageError(f"{label} must be {_describe(kind)}, got {value!r}")
        if value is not None and any(not BOUNDS[k][1](value, metadata[k]) for k in BOUNDS if k in metadata):
            why = f" ({metadata['why']})" if "why" in metadata else ""
            raise UsageError(f"{label} must be {_bounds_text(metadata)}{why}, got {value}")
        if field.name.endswith("seed") and isinstance(value, int):
            check_seed(value, label)


def check_seed(value: int, label: str = "seed") -> None:
    if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise UsageError(f"{label} must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {value}")
