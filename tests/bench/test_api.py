"""The Python API: `import mrfbench` and call what the command line does."""

import pandas as pd
import pytest
import torch

import mrfbench
import mrfbench.aggregation
import mrfbench.sweeps
import mrfbench.training
from mrfbench.errors import UsageError

TINY = {"epochs": 1, "batch_size": 64, "data": {"n_train": 128, "n_val": 32, "n_test": 16},
        "scoring": {"n_unconditional": 1000, "n_per_tuple": 2}, "device": "cpu"}


def test_the_api_survives_the_modules_of_the_same_names_being_imported():
    assert callable(mrfbench.train) and callable(mrfbench.sweep) and callable(mrfbench.leaderboard)


def test_train_load_run_load_sweep_and_leaderboard_from_python(tmp_path):
    before = torch.get_rng_state()
    metrics = mrfbench.train(tmp_path / "runs" / "a", model="mvae", seed=0, beta=0.5, **TINY)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is left as it was
    mrfbench.train(tmp_path / "runs" / "b", model="mvae", seed=1, beta=0.5, **TINY)
    run = mrfbench.load_run(tmp_path / "runs" / "a", device="cpu")
    assert run.config["model"] == "mvae" and run.metrics == metrics and list(run.history["epoch"]) == [1]
    assert metrics["training"]["precision"] == "fp32"  # as it trained (a trial's record names its variant so)
    assert run.model.config.beta == 0.5 and not run.model.training
    trials = mrfbench.load_sweep(tmp_path / "runs")
    assert isinstance(trials, pd.DataFrame) and sorted(trials["seed"].unique()) == [0, 1]
    assert {"model", "variant", "seed", "metric", "value"} <= set(trials.columns)
    board = mrfbench.leaderboard(tmp_path / "runs")
    assert list(board["model"]) == ["mvae"] and board["seeds"].iloc[0] == 2
    assert not (tmp_path / "runs" / "leaderboard.md").exists()  # the API's leaderboard writes nothing


def test_train_with_lists_of_settings_trains_their_product_as_a_pack_of_runs(tmp_path):
    results = mrfbench.train(tmp_path / "grid", model="gmrf", seed=range(2), beta=[0.5, 1], pack_size=4, **TINY)
    assert sorted(results) == ["beta=0.5_seed=0", "beta=0.5_seed=1", "beta=1.0_seed=0", "beta=1.0_seed=1"]
    run = mrfbench.load_run(tmp_path / "grid" / "beta=0.5_seed=1", device="cpu")
    assert run.metrics == results["beta=0.5_seed=1"] and run.metrics["training"]["pack_members"] == 4
    assert run.config["train"]["seed"] == 1 and run.model.config.beta == 0.5
    assert mrfbench.leaderboard(tmp_path / "grid")["seeds"].tolist() == [2]
    again = mrfbench.train(tmp_path / "grid", model="gmrf", seed=[0, 1], beta=[0.5, 1.0], **TINY)  # all finished
    assert again == results


def test_train_refuses_a_setting_listed_twice_before_it_trains(tmp_path):
    with pytest.raises(UsageError, match="seed lists 1 twice"):
        mrfbench.train(tmp_path / "grid", seed=[1, 1], **TINY)
    assert not (tmp_path / "grid").exists()
