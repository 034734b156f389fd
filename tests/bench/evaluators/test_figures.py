"""A run reports exactly its evaluator's declared figures, read where they lie in its metrics."""

import math

import pytest

from mrfbench.errors import UsageError
from mrfbench.evaluators import EVALUATORS, Evaluator, Figure, get_evaluator, register_evaluator, run_figures


def test_a_figure_is_read_from_its_source_and_null_reads_as_nan():
    floor = Figure("conditional/floor_w1", "floor", ("conditional", "floor", "w1"))
    assert floor.read({"conditional": {"floor": {"w1": 2}}}) == 2.0
    assert floor.read({"conditional": {}}) is None
    assert math.isnan(floor.read({"conditional": {"floor": {"w1": None}}}))  # JSON writes NaN as null
    with pytest.raises(ValueError, match="not a number"):
        floor.read({"conditional": {"floor": {"w1": [1.0, 2.0]}}})


def test_a_run_reports_its_declared_figures_and_a_missing_one_is_named(monkeypatch):
    monkeypatch.setattr(EVALUATORS, "_items", dict(EVALUATORS._items))  # registered for this test only
    evaluator = Evaluator(dataset="figures-test", score=None,
                          paper=(Figure("a/x", "x"), Figure("a/y", "y", better="higher", optional=True)),
                          score_parts=("a/x", "a/x"), score_direction="lower",
                          recorded=(Figure("b/n", "samples"),))
    register_evaluator(evaluator)
    metrics = {"a": {"x": 3.0, "z": 9.0}, "b": {"n": 10}, "training": {"wall_time_s": 1.5}}
    assert run_figures(metrics, "figures-test") == {"a/x": 3.0, "b/n": 10.0, "train_wall_time_s": 1.5, "score": 3.0}
    with pytest.raises(ValueError, match="lack the figure b/n"):
        evaluator.figures({"a": {"x": 3.0}})
    with pytest.raises(ValueError, match="declares a figure twice"):
        register_evaluator(Evaluator(dataset="twice", score=None, paper=(Figure("a/x", "x"),) * 2,
                                     score_parts=("a/x", "a/x"), score_direction="lower"))


def test_a_data_set_without_an_evaluator_is_named():
    with pytest.raises(UsageError, match="data set 'nowhere' has no evaluator"):
        get_evaluator("nowhere")


def test_a_runs_table_shows_each_figure_with_its_floor_ceiling_and_the_papers():
    """Built from the declarations alone: a committed MNIST-3 run without Inception weights shows fid_suite,
    starred, for the paper's FID, beside its noise floor; its conditional coherence beside its ceiling."""
    import json
    from pathlib import Path

    from rich.console import Console

    from mrfbench.evaluators.figures import figure_table
    from mrfbench.paper import paper_figures

    run = Path(__file__).parents[1] / "fixtures" / "leaderboards" / "mnist3-runs" / "mnist3-nnmrf-cpu-seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    console = Console(record=True, width=200)
    console.print(figure_table(get_evaluator("mnist3"), metrics, paper_figures("mnist3", "nnmrf")))
    text = console.export_text()
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.startswith("│")}
    assert rows["uncond fid_suite* (lower is better)"] == ["343.5", "13.96", "-", "1.425e+04"]
    assert rows["cond coherence (higher is better)"] == ["0.4127", "-", "0.9843", "0.16"]
    assert "another metric standing in" in text
