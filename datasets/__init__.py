"""Data sets and their benchmark specs, registered by name (``datasets.spec``).

Every module of this package is imported, so a new data set is one new module that calls
``register_benchmark``; modules named in ``$MRFBENCH_PLUGINS`` (comma-separated, importable) are imported
too, in this process and in sweep trials, for data sets kept outside the package."""

from __future__ import annotations

import importlib
import os
import pkgutil

from mrfbench.datasets.spec import BENCHMARKS, Benchmark, Column, get_benchmark, register_benchmark

PLUGINS_ENV = "MRFBENCH_PLUGINS"
DEFAULT_DATASET = "copula"

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
for _plugin in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
    importlib.import_module(_plugin.strip())


def get_dataset(name: str, **options):
    """Build the data set ``name`` with config fields ``options``; unknown names list the valid ones."""
    return get_benchmark(name).make(**options)


__all__ = ["BENCHMARKS", "DEFAULT_DATASET", "PLUGINS_ENV", "Benchmark", "Column", "get_benchmark", "get_dataset",
           "register_benchmark"]
