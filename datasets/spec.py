"""Benchmark specs: one per data set, registered by name, holding everything outside the data itself that
the suite needs to know about it: its evaluator, the figures of its table (with their noise floors), the
score a sweep minimises, its budgets and its notes. Nothing outside ``datasets/`` and the evaluators names a
data set; everything else reads its spec."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

from mrfbench.errors import UsageError
from mrfbench.plugins import Registry

BENCHMARKS = Registry("data set")  # name -> Benchmark


@dataclass(frozen=True)
class Column:
    """A figure of a leaderboard: its flattened key ('<section>/<metric>') and title; ``fallback`` is shown,
    marked *, where ``key`` is missing (and no difference to the paper is taken)."""

    key: str
    title: str
    fallback: str | None = None
    unit: str = ""  # appended to the figure's name in leaderboard.csv, e.g. "x1000"
    better: Literal["lower", "higher"] = "lower"  # which way the figure improves


@dataclass(frozen=True)
class Benchmark:
    """A data set and how it is scored.

    ``evaluator`` names a module with ``score(model, dataset, data, split, eval_config, device, out) -> dict``
    (the metrics sections of ``data``, the ``split`` of ``dataset``, writing the run's picture into ``out``), ``proxy(model) -> float`` (a
    per-epoch score for ASHA, lower is better; None where there is none) and ``tables(metrics, paper) -> list``
    (rich tables for the terminal). A run's ``score`` is the mean of the two ``score_parts``, or 1 minus it
    when they are ``higher`` is better: a sweep always minimises it."""

    name: str
    description: str
    dataset: type  # built as dataset(config(**options)); has splits(), n_modalities, modality_shape
    config: type  # a dataclass of the data set's options
    evaluator: str  # module path of the evaluator
    architecture: Literal["mlp", "conv"]
    table: str  # the paper's table it maps to, e.g. "Table 2"
    score_parts: tuple[str, str]  # flattened keys
    score_direction: Literal["lower", "higher"]
    columns: tuple[Column, ...]  # the paper's table
    bounds: tuple[Column, ...] = ()  # noise floors and ceilings, printed beside the table
    beyond: tuple[Column, ...] = ()  # our figures beyond the paper's
    notes: str = ""
    budgets: dict[str, str] = field(default_factory=dict)  # reproduce budget -> search space (name or path)
    default_space: str | None = None  # the space `mrfbench sweep` uses when none is given
    bf16: str | None = None  # why bfloat16 training is refused (None: allowed)
    search_eval_options: dict = field(default_factory=dict)  # scoring of search-stage trials (e.g. fewer samples)
    prepare: Callable[..., dict] | None = None  # (data_dir, mnist, status) -> dataset options, before a sweep
    build: Callable[..., dict] | None = None  # `mrfbench data`: (out, seed, mnist, backgrounds) -> manifest, build_dir

    @property
    def beyond_columns(self) -> tuple[Column, ...]:
        """Our figures beyond the paper's: the spec's own, then those plugins added (``register_metric``)."""
        return self.beyond + tuple(metric.column for metric in added_metrics(self.name))

    def score(self, flat: dict[str, float]) -> float:
        mean = 0.5 * (flat[self.score_parts[0]] + flat[self.score_parts[1]])
        return mean if self.score_direction == "lower" else 1.0 - mean

    def get_evaluator(self) -> ModuleType:
        return importlib.import_module(self.evaluator)

    def check_options(self, options: dict):
        """The data set's config from ``options``: unknown options list the valid ones, bad values are named."""
        fields = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise UsageError(f"data set '{self.name}' has no option(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(fields))}")
        return self.config(**options)

    def make(self, **options):
        """The data set with config fields ``options`` (checked as ``check_options`` does)."""
        return self.dataset(self.check_options(options))


def register_benchmark(spec: Benchmark) -> Benchmark:
    shown = {c.key for c in spec.columns + spec.beyond}
    if not set(spec.score_parts) <= shown:
        raise ValueError(f"data set '{spec.name}': its score parts {spec.score_parts} must be among its columns")
    BENCHMARKS.add(spec.name, spec)
    return spec


@dataclass(frozen=True)
class Metric:
    """A figure added to a data set's scoring from outside its evaluator (a plugin module): ``compute(model,
    dataset, data, eval_config, device) -> float`` runs after the evaluator on the same split, its value is
    the metrics' ``<section>/<name>``, and the leaderboard shows it among our figures beyond the paper's."""

    dataset: str
    section: str
    name: str
    title: str
    compute: Callable[..., float]
    better: Literal["lower", "higher"] = "lower"
    unit: str = ""

    @property
    def column(self) -> Column:
        return Column(f"{self.section}/{self.name}", self.title, unit=self.unit, better=self.better)


METRICS = Registry("metric")  # "<data set>:<section>/<name>" -> Metric


def register_metric(metric: Metric) -> Metric:
    METRICS.add(f"{metric.dataset}:{metric.section}/{metric.name}", metric)
    return metric


def added_metrics(dataset: str) -> list[Metric]:
    """The metrics plugins added to ``dataset``'s scoring."""
    return [metric for metric in METRICS.values() if metric.dataset == dataset]


def get_benchmark(name: str) -> Benchmark:
    return BENCHMARKS.named(name)


def budget_space(name: str, budget: str) -> str:
    """The search space of a reproduce budget of data set ``name``."""
    spec = get_benchmark(name)
    if budget not in spec.budgets:
        raise UsageError(f"unknown budget '{budget}' for {name}; valid: {', '.join(spec.budgets) or 'none'}")
    return spec.budgets[budget]

