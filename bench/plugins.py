"""Registries filled by discovery, one idiom for models, data sets, evaluators and metrics: importing a
registry's package imports each of its modules, where each registers itself (``register_model``,
``register_benchmark``, ``register_evaluator``); the registry's first lookup imports the modules named in
``$MRFBENCH_PLUGINS`` (comma-separated, importable), for those kept outside the package, in this process and
in sweep trials alike (at lookup, not import, so that a plugin may import any part of mrfbench)."""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterator, Mapping

from mrfbench.errors import UsageError, first_line

PLUGINS_ENV = "MRFBENCH_PLUGINS"


def discover(package: str, path) -> None:
    """Import every module of ``package`` (at ``path``, its ``__path__``)."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


class Registry(Mapping):
    """Name -> registered thing (a model class, a data set's spec, an evaluator); reading it loads the plugins first."""

    def __init__(self, kind: str):
        self.kind, self._items = kind, {}

    def add(self, name: str, item) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item

    def named(self, name: str):
        """The thing registered as ``name``; an unknown name lists the valid ones."""
        if name not in self:
            raise UsageError(f"unknown {self.kind} '{name}'; valid: {', '.join(sorted(self._items))}")
        return self._items[name]

    def __getitem__(self, name: str):
        load_plugins()
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(dict(self._items))

    def __len__(self) -> int:
        load_plugins()
        return len(self._items)


def load_plugins() -> None:
    """Import each module named in ``$MRFBENCH_PLUGINS``; one that cannot be imported is named, with the
    variable and why, in one line."""
    for name in filter(None, (part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - whatever a plugin raises, the user needs its name
            raise UsageError(f"{PLUGINS_ENV} names the module '{name}', which cannot be imported "
                             f"({type(err).__name__}: {first_line(err)})") from None
