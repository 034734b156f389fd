"""Benchmark specs: one per data set, registered by name, holding what the suite needs to know about it
beside the data itself: its options, the paper's table it maps to, its budgets and its notes. How its runs
are scored is its evaluator's (``mrfbench.evaluators``, registered under the same name). Nothing outside
``datasets/`` and the evaluators names a data set; everything else reads its spec."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from mrfbench.errors import UsageError
from mrfbench.plugins import Registry

BENCHMARKS = Registry("data set")  # name -> Benchmark


@dataclass(frozen=True)
class Benchmark:
    """A data set: how it is built and trained on; its evaluator, registered under ``name``, scores it."""

    name: str
    description: str
    dataset: type  # built as dataset(config(**options)); has splits(), n_modalities, modality_shape
    config: type  # a dataclass of the data set's options
    architecture: Literal["mlp", "conv"]
    table: str  # the paper's table it maps to, e.g. "Table 2"
    notes: str = ""
    budgets: dict[str, str] = field(default_factory=dict)  # reproduce budget -> search space (name or path)
    default_space: str | None = None  # the space `mrfbench sweep` uses when none is given
    bf16: str | None = None  # why bfloat16 training is refused (None: allowed)
    search_eval_options: dict = field(default_factory=dict)  # scoring of search-stage trials (e.g. fewer samples)
    prepare: Callable[..., dict] | None = None  # (data_dir, mnist, status) -> dataset options, before a sweep
    build: Callable[..., dict] | None = None  # `mrfbench data`: (out, seed, mnist, backgrounds) -> manifest, build_dir

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
    BENCHMARKS.add(spec.name, spec)
    return spec


def get_benchmark(name: str) -> Benchmark:
    return BENCHMARKS.named(name)


def budget_space(name: str, budget: str) -> str:
    """The search space of a reproduce budget of data set ``name``."""
    spec = get_benchmark(name)
    if budget not in spec.budgets:
        raise UsageError(f"unknown budget '{budget}' for {name}; valid: {', '.join(spec.budgets) or 'none'}")
    return spec.budgets[budget]

