"""Data set registry: ``get_dataset(name, **options)`` builds a data set by name."""

from __future__ import annotations

from mrfbench.datasets.copula import CopulaConfig, CopulaDataset
from mrfbench.errors import UsageError

DATASETS = {"copula": (CopulaDataset, CopulaConfig)}
DATASET_DESCRIPTIONS = {
    "copula": "4 modalities x 2-D, Uniform(0,1) marginals tied by Gaussian copulas (paper Sec. 4.2)",
}


def get_dataset(name: str, **options):
    """Build the data set ``name`` with config fields ``options``; unknown names list the valid ones."""
    if name not in DATASETS:
        raise UsageError(f"unknown data set '{name}'; valid: {', '.join(sorted(DATASETS))}")
    dataset_cls, config_cls = DATASETS[name]
    return dataset_cls(config_cls(**options))
