"""Evaluators, one per metric family, registered by the name of the data set they score
(``register_evaluator``); every module of this package is imported, and the registry's first lookup loads
``$MRFBENCH_PLUGINS`` (``mrfbench.plugins``), where an outside data set registers its own."""

from __future__ import annotations

from mrfbench.evaluators.figures import (
    EVALUATORS,
    Evaluator,
    Figure,
    Metric,
    added_metrics,
    get_evaluator,
    register_evaluator,
    register_metric,
    run_figures,
)
from mrfbench.plugins import discover

discover(__name__, __path__)

__all__ = ["EVALUATORS", "Evaluator", "Figure", "Metric", "added_metrics", "get_evaluator", "register_evaluator",
           "register_metric", "run_figures"]
