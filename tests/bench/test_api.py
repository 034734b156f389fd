"""The Python API: `import mrfbench` and call what the command line does."""

import pandas as pd

import mrfbench
import mrfbench.aggregation
import mrfbench.sweeps
import mrfbench.training

TINY = {"epochs": 1, "batch_size": 64, "data": {"n_train": 128, "n_val": 32, "n_test": 16},
        "scoring": {"n_unconditional": 1000, "n_per_tuple": 2}, "device": "cpu"}


def test_the_api_survives_the_modules_of_the_same_names_being_imported():
    assert callable(mrfbench.train) and callable(mrfbench.sweep) and callable(mrfbench.leaderboard)


def test_train_load_run_load_sweep_and_leaderboard_from_python(tmp_path):
    metrics = mrfbench.train(tmp_path / "runs" / "a", model="mvae", seed=0, beta=0.5, **TINY)
    mrfbench.train(tmp_path / "runs" / "b", model="mvae", seed=1, beta=0.5, **TINY)
    run = mrfbench.load_run(tmp_path / "runs" / "a", device="cpu")
    assert run.config["model"] == "mvae" and run.metrics == metrics and list(run.history["epoch"]) == [1]
    assert run.model.config.beta == 0.5 and not run.model.training
    trials = mrfbench.load_sweep(tmp_path / "runs")
    assert isinstance(trials, pd.DataFrame) and sorted(trials["seed"].unique()) == [0, 1]
    assert {"model", "variant", "seed", "metric", "value"} <= set(trials.columns)
    board = mrfbench.leaderboard(tmp_path / "runs")
    assert list(board["model"]) == ["mvae"] and board["seeds"].iloc[0] == 2
    assert not (tmp_path / "runs" / "leaderboard.md").exists()  # the API's leaderboard writes nothing
