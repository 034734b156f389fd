"""Data set registry: ``get_dataset(name, **options)`` builds a data set by name."""

from __future__ import annotations

import dataclasses

from mrfbench.datasets.copula import CopulaConfig, CopulaDataset
from mrfbench.datasets.images import ImageConfig, MNIST3Dataset, PolyMNISTDataset
from mrfbench.errors import UsageError

DATASETS = {"copula": (CopulaDataset, CopulaConfig), "polymnist": (PolyMNISTDataset, ImageConfig),
            "mnist3": (MNIST3Dataset, ImageConfig)}
DATASET_DESCRIPTIONS = {
    "copula": "4 modalities x 2-D, Uniform(0,1) marginals tied by Gaussian copulas (paper Sec. 4.2)",
    "polymnist": "5 modalities of 3x28x28 digits on photo backgrounds (Sutter et al. 2021); `mrfbench data polymnist`",
    "mnist3": "3 modalities of 28x28 digits: two of the label, one random (paper App. D.2); `mrfbench data mnist3`",
}


def get_dataset(name: str, **options):
    """Build the data set ``name`` with config fields ``options``; unknown names list the valid ones."""
    if name not in DATASETS:
        raise UsageError(f"unknown data set '{name}'; valid: {', '.join(sorted(DATASETS))}")
    dataset_cls, config_cls = DATASETS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UsageError(f"data set '{name}' has no option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    return dataset_cls(config_cls(**options))
