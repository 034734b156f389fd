"""How sure a leaderboard is: a 95% interval of each mean over seeds, and which models a figure cannot
tell apart from the best."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # Welch's t-test level at which a model is told apart from the best


def interval(values: Sequence[float]) -> float | None:
    """The half-width of the Student t 95% interval of the mean of ``values`` (None below two values): with
    3 seeds, t has 2 degrees of freedom and the half-width is 2.48 standard deviations."""
    n = len(values)
    if n < 2:
        return None
    std = float(stats.tstd(values))
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)


def tied_with_best(values: dict[str, Sequence[float]], better: str) -> set[str]:
    """The models whose mean of ``values`` (a model's seeds) Welch's t-test at 5% cannot tell apart from the
    best mean's, the best included. The best is chosen among the models with the most seeds (a lucky single
    seed does not crown itself); a model with fewer than two seeds is never tested."""
    most = max((len(v) for v in values.values()), default=0)
    means = {model: sum(v) / len(v) for model, v in values.items() if len(v) == most and most}
    if not means:
        return set()
    best = (min if better == "lower" else max)(means, key=means.get)
    tied = {best}
    for model in values:
        a, b = values[model], values[best]
        if model == best or len(a) < 2 or len(b) < 2:
            continue
        if _same(a) and _same(b):
            equal = a[0] == b[0]
        else:
            equal = stats.ttest_ind(a, b, equal_var=False).pvalue >= ALPHA
        if equal:
            tied.add(model)
    return tied


def _same(values: Sequence[float]) -> bool:
    return max(values) == min(values)
