"""The paper's reported figures (Tables 1, 2, 4), kept in the package as data, shown beside our own."""

from __future__ import annotations

import csv
from functools import cache
from importlib.resources import files


@cache
def paper_rows() -> tuple[dict[str, str], ...]:
    with files("mrfbench").joinpath("data/paper_tables.csv").open() as handle:
        return tuple(csv.DictReader(handle))


def paper_figures(dataset: str, model: str) -> dict[tuple[str, str], float]:
    """{(setting, metric): value} the paper reports for ``model`` on ``dataset`` (empty if none)."""
    return {
        (row["setting"], row["metric"]): float(row["value"])
        for row in paper_rows()
        if row["dataset"] == dataset and row["model"] == model
    }
