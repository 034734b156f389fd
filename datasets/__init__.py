"""Data sets and their benchmark specs, registered by name (``datasets.spec``).

Every module of this package is imported, so a new data set is one new module that calls
``register_benchmark``; the registry's first lookup imports the modules named in ``$MRFBENCH_PLUGINS``
(``mrfbench.plugins``), for data sets kept outside the package."""

from __future__ import annotations

from mrfbench.datasets.spec import BENCHMARKS, Benchmark, get_benchmark, register_benchmark
from mrfbench.plugins import PLUGINS_ENV, discover

DEFAULT_DATASET = "copula"

discover(__name__, __path__)


def get_dataset(name: str, **options):
    """Build the data set ``name`` with config fields ``options``; unknown names list the valid ones."""
    return get_benchmark(name).make(**options)


__all__ = ["BENCHMARKS", "DEFAULT_DATASET", "PLUGINS_ENV", "Benchmark", "get_benchmark", "get_dataset",
           "register_benchmark"]
