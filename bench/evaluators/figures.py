"""What a data set's runs are scored on. Its evaluator declares every figure it reports (key, title, unit,
which way is better, where in the run's metrics it lies) and which of them the leaderboard shows: the
paper's table, the noise floors and ceilings beside it, ours beyond the paper's. A run's flat figures are
exactly the declared keys, read and checked here; every table is built from these declarations."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mrfbench.errors import UsageError
from mrfbench.plugins import Registry

EVALUATORS = Registry("evaluator")  # data set name -> Evaluator


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Figure:
    """A scalar a run reports: ``key`` ('<section>/<name>') names it in trial records, ``results.csv`` and
    leaderboards; ``source`` is its path in the run's metrics (default: the key's parts). A leaderboard
    column shows ``fallback``, marked *, where a run lacks ``key``; an ``optional`` figure may be absent.
    ``floor`` and ``ceiling`` name the declared figures that bound it (the same metric on exact data, the
    best a model can score)."""

    key: str
    title: str
    source: tuple[str, ...] = ()
    unit: str = ""  # appended to the figure's name in leaderboard.csv, e.g. "x1000"
    better: Literal["lower", "higher"] = "lower"
    fallback: str | None = None
    optional: bool = False
    floor: str | None = None
    ceiling: str | None = None

    def read(self, metrics: dict) -> float | None:
        """The figure in ``metrics`` (None where it is absent; NaN where it was written as null, as JSON
        writes NaN); a value that is not a number is refused."""
        value = metrics
        for part in self.source or tuple(self.key.split("/")):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        if value is None:
            return math.nan
        if not _number(value):
            raise ValueError(f"figure {self.key} is not a number: {value!r}")
        return float(value)


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
    def figure(self) -> Figure:
        return Figure(f"{self.section}/{self.name}", self.title, unit=self.unit, better=self.better, optional=True)


METRICS = Registry("metric")  # "<data set>:<section>/<name>" -> Metric


def register_metric(metric: Metric) -> Metric:
    METRICS.add(f"{metric.dataset}:{metric.section}/{metric.name}", metric)
    return metric


def added_metrics(dataset: str) -> list[Metric]:
    """The metrics plugins added to ``dataset``'s scoring."""
    return [metric for metric in METRICS.values() if metric.dataset == dataset]


@dataclass(frozen=True)
class Evaluator:
    """How the runs of data set ``dataset`` are scored.

    ``score(model, dataset, data, split, eval_config, device, out) -> dict`` returns the metrics sections of
    ``data`` (the ``split`` of the data set), writing the run's picture into ``out``; ``proxy(model) ->
    float`` is a per-epoch score for ASHA (lower is better; None where there is none); ``details(metrics)
    -> list`` lays out for the terminal what a run's figures do not say (``figure_table`` shows those).
    The figures: ``paper`` (the paper's table), ``bounds`` (noise floors and ceilings beside it),
    ``beyond`` (ours beyond the paper's) and ``recorded`` (kept in every record, not shown). A run's
    ``score``, which a sweep minimises, is the mean of the two ``score_parts``, or 1 minus it when higher
    is better."""

    dataset: str
    score: Callable[..., dict]
    paper: tuple[Figure, ...]
    score_parts: tuple[str, str]
    score_direction: Literal["lower", "higher"]
    bounds: tuple[Figure, ...] = ()
    beyond: tuple[Figure, ...] = ()
    recorded: tuple[Figure, ...] = ()
    proxy: Callable | None = None
    details: Callable[[dict], list] | None = None

    @property
    def beyond_columns(self) -> tuple[Figure, ...]:
        """Our figures beyond the paper's: the evaluator's own, then those plugins added (``register_metric``)."""
        return self.beyond + tuple(metric.figure for metric in added_metrics(self.dataset))

    @property
    def declared(self) -> tuple[Figure, ...]:
        return self.paper + self.bounds + self.beyond_columns + self.recorded

    def figures(self, metrics: dict) -> dict[str, float]:
        """Every declared figure of ``metrics`` (the evaluator's sections of one run), by key; a figure that
        is neither there nor optional is an error."""
        flat = {}
        for figure in self.declared:
            value = figure.read(metrics)
            if value is None and not figure.optional:
                raise ValueError(f"the {self.dataset} metrics lack the figure {figure.key}")
            if value is not None:
                flat[figure.key] = value
        return flat

    def objective(self, flat: dict[str, float]) -> float:
        """The score a sweep minimises, from a run's flat figures."""
        mean = 0.5 * (flat[self.score_parts[0]] + flat[self.score_parts[1]])
        return mean if self.score_direction == "lower" else 1.0 - mean


def register_evaluator(evaluator: Evaluator) -> Evaluator:
    keys = [figure.key for figure in evaluator.paper + evaluator.bounds + evaluator.beyond + evaluator.recorded]
    if len(set(keys)) < len(keys):
        raise ValueError(f"evaluator of '{evaluator.dataset}' declares a figure twice")
    if not set(evaluator.score_parts) <= {figure.key for figure in evaluator.paper + evaluator.beyond}:
        raise ValueError(f"evaluator of '{evaluator.dataset}': its score parts must be among its shown figures")
    named = {name for f in evaluator.paper + evaluator.bounds + evaluator.beyond + evaluator.recorded
             for name in (f.fallback, f.floor, f.ceiling) if name}
    if named - set(keys):
        raise ValueError(f"evaluator of '{evaluator.dataset}': {sorted(named - set(keys))} are named but not declared")
    EVALUATORS.add(evaluator.dataset, evaluator)
    return evaluator


def get_evaluator(dataset: str) -> Evaluator:
    """The evaluator of data set ``dataset`` (importing ``mrfbench.evaluators`` registers the package's own)."""
    if dataset not in EVALUATORS:
        raise UsageError(f"data set '{dataset}' has no evaluator: its module registers one with register_evaluator "
                         f"(registered: {', '.join(sorted(EVALUATORS))})")
    return EVALUATORS[dataset]


def run_figures(metrics: dict, dataset: str) -> dict[str, float]:
    """The scalar figures a finished run on ``dataset`` reports (a trial's record): its evaluator's declared
    figures, then ``collapsed`` and ``collapse_unreadable`` (a block whose KL is not finite) from its collapse
    report where it has one, the training time and ``score`` (what a sweep minimises)."""
    evaluator = get_evaluator(dataset)
    flat = evaluator.figures(metrics)
    if "collapse" in metrics:
        flat["collapsed"] = float(metrics["collapse"]["collapsed"])
        kl = metrics["collapse"].get("kl_per_block", [])
        flat["collapse_unreadable"] = float(any(v is None or not math.isfinite(v) for v in kl))
    flat["train_wall_time_s"] = float(metrics["training"]["wall_time_s"])
    flat["score"] = evaluator.objective(flat)
    return flat


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def figure_table(evaluator: Evaluator, metrics: dict, paper: dict):
    """A run's figures for the terminal, as its evaluator declares them: the paper's, then ours beyond them,
    each with its unit and direction, its noise floor and ceiling where it has them, and the paper's figure
    (``paper``: {(section, name): value}); a fallback shown for a missing figure is marked *."""
    from rich.table import Table

    flat = evaluator.figures(metrics)
    declared = {f.key: f for f in evaluator.declared}
    table = Table("figure", "ours", "noise floor", "ceiling", "paper",
                  title=f"{metrics['model']}, beta={metrics['beta']}, capacity {metrics['capacity']}"
                        f" ({metrics.get('training', {}).get('eval_split', 'test')} split)")
    for figure in evaluator.paper + evaluator.beyond_columns:
        shown = declared[figure.fallback] if figure.key not in flat and figure.fallback else figure
        if shown.key not in flat:
            continue
        if shown is not figure:
            table.caption = "*: another metric standing in for the paper's, whose figure is beside it for reference only"
        name = f"{shown.title}{'*' if shown is not figure else ''} ({f'{figure.unit}, ' if figure.unit else ''}"
        table.add_row(name + f"{figure.better} is better)", _cell(flat[shown.key]),
                      _cell(flat.get(shown.floor)), _cell(flat.get(shown.ceiling)),
                      _cell(paper.get(tuple(figure.key.split("/", 1)))))
    return table
