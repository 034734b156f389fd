import math

import pytest

from mrfbench.uncertainty import interval, tied_with_best


def test_the_interval_is_students_t_over_the_seeds():
    assert interval([1.0, 2.0, 3.0]) == pytest.approx(4.302653 / math.sqrt(3))  # t(0.975, 2) x std 1 / sqrt 3
    assert interval([2.0, 4.0]) == pytest.approx(12.706205 * math.sqrt(2) / math.sqrt(2))
    assert interval([1.0]) is None


def test_models_welchs_test_cannot_tell_from_the_best_are_tied_with_it():
    values = {"a": [1.0, 1.1, 0.9], "b": [1.05, 1.25, 0.95], "c": [5.0, 5.1, 4.9], "d": [0.7]}
    assert tied_with_best(values, "lower") == {"a", "b"}  # d has one seed: never tested, never the best by luck
    assert tied_with_best(values, "higher") == {"c"}
    assert tied_with_best({"a": [1.0, 1.0], "b": [1.0, 1.0], "c": [2.0, 2.0]}, "lower") == {"a", "b"}


def test_one_seed_each_marks_the_best_alone():
    assert tied_with_best({"a": [1.0], "b": [1.01]}, "lower") == {"a"}
