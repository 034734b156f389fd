import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from mrfbench.aggregation import aggregate, flagged_seeds, leaderboard, sweep_cost, tidy, to_markdown, write_leaderboard
from mrfbench.datasets import get_benchmark
from mrfbench.errors import UsageError
from mrfbench.evaluate import EvalConfig
from mrfbench.experiment import run_experiment
from mrfbench.training import TrainConfig

DATA = {"n_train": 128, "n_val": 64, "n_test": 32}
EVAL = EvalConfig(n_unconditional=2000, n_per_tuple=2, n_joint=1000, n_tau=500, n_projections=20)

COPULA = get_benchmark("copula")


def test_a_directory_of_train_runs_makes_a_leaderboard(tmp_path):
    """Runs made by hand (`mrfbench train`) aggregate like a sweep's trials: one variant per distinct
    beta / epochs / non-default option, seeds averaged, the paper's figure beside ours."""
    runs = tmp_path / "runs"
    for name, options, seed, split in [("a", {"specific_dim": 2}, 0, "test"), ("b", {"specific_dim": 2}, 1, "test"),
                                       ("c", {}, 0, "test"), ("search", {"beta": 0.5}, 0, "val")]:
        run_experiment("mvae", "copula", runs / name, model_options={"beta": 1.0, **options},
                       dataset_options={**DATA, "seed": seed}, eval_config=EVAL, eval_split=split,
                       train_config=TrainConfig(epochs=1, batch_size=64, seed=seed, device="cpu"))
    md, csv, board, _ = write_leaderboard(runs, tmp_path / "results")
    row = board.set_index("model").loc["mvae"]
    assert row["variant"] == "beta=1,epochs=1,specific_dim=2" and row["seeds"] == 2  # most seeds wins
    assert row["unconditional/wasserstein_mean paper"] == pytest.approx(2.9) and row["train s"] > 0
    assert 0 <= row["dependence/kendall_tau_mae mean"] <= 2  # our dependence figures beside the paper's
    assert row["conditional/per_tuple_wasserstein_mean mean"] > 0
    assert "| mvae | beta=1,epochs=1,specific_dim=2 | 2 |" in md.read_text() and csv.exists()
    ratio = row["unconditional/wasserstein_mean mean"] / 2.9  # ours over the paper's figure, beside it
    assert f"({2.9:g}, {ratio:.2g}x)" in md.read_text()
    columns = set(pd.read_csv(csv).columns)  # snake_case names that carry their unit
    assert {"unconditional_wasserstein_mean_x1000_mean", "dependence_kendall_tau_mae_std", "train_wall_time_s"} <= columns
    assert "Kendall tau MAE" in md.read_text() and (md.parent / "leaderboard.png").stat().st_size > 0
    # a run scored on the validation split is a search run: listed with its score, never a table row
    assert "| mvae | beta=0.5,epochs=1 | 1 |" in md.read_text() and "(best)" in md.read_text()
    terminal = subprocess.run([sys.executable, "-m", "mrfbench", "leaderboard", str(runs)], capture_output=True,
                              text=True, env={**os.environ, "COLUMNS": "100"})
    lines = terminal.stdout.splitlines()
    assert terminal.returncode == 0 and max(map(len, lines)) <= 100, terminal.stdout
    [row_line] = [line for line in lines if "│ mvae" in line]  # one model, one unbroken row
    assert f"{row['unconditional/wasserstein_mean mean']:.3g}" in row_line and "(2.9)" in row_line
    for metrics_file in runs.glob("*/metrics.json"):  # metrics.json written before the spec kept its data set
        old = json.loads(metrics_file.read_text())
        metrics_file.write_text(json.dumps({k: v for k, v in old.items() if k not in ("dataset", "eval")}))
    assert write_leaderboard(runs)[2].equals(board)
    shutil.copytree(runs / "a", runs / "a-again")
    with pytest.raises(UsageError, match="repeat one model, variant, seed and split"):
        write_leaderboard(runs, tmp_path / "results")


def test_best_variant_is_the_lowest_mean_among_the_most_seeded():
    def record(beta, seed, score):
        return {"model": "gmrf", "params": {"beta": beta}, "seed": seed, "stage": "final", "status": "ok",
                "metrics": {"score": score}}

    records = [record(1.0, 0, 5.0), record(1.0, 1, 7.0), record(0.1, 0, 9.0), record(0.1, 1, 8.0),
               record(2.5, 0, 1.0)]  # a single lucky seed does not win
    board = leaderboard(aggregate(tidy(records)), COPULA)
    assert board.loc[0, "variant"] == "beta=1" and board.loc[0, "seeds"] == 2


def test_a_variant_is_named_as_its_runs_trained_not_as_asked():
    asked = {"model": "gmrf", "params": {"beta": 1.0, "precision": "bf16"}, "seed": 0, "stage": "final",
             "status": "ok", "metrics": {"score": 5.0}}
    table = tidy([asked, {**asked, "seed": 1, "trained_as": {"precision": "fp32"}}])
    assert sorted(table["variant"].unique()) == ["beta=1,precision=bf16", "beta=1,precision=fp32"]


def test_an_outlier_seed_and_a_collapsed_seed_are_flagged_not_silently_averaged():
    """MMVAE+'s failed seed (score 62 beside 7.5 and 8.3) was averaged into its row without a word."""
    def record(seed, score, collapsed=0.0, unreadable=0.0):
        return {"model": "mmvaeplus", "params": {"beta": 1.0}, "seed": seed, "stage": "final", "status": "ok",
                "metrics": {"score": score, "collapsed": collapsed, "collapse_unreadable": unreadable}}

    table = tidy([record(0, 7.5), record(1, 8.3), record(2, 62.2), record(3, 8.0, collapsed=1.0),
                  record(4, 7.9, unreadable=1.0)])
    board = leaderboard(aggregate(table), COPULA)
    flagged = flagged_seeds(table, board).set_index("seed")
    assert sorted(flagged.index) == [2, 3, 4]
    assert "7.8x the median" in flagged.loc[2, "reason"]
    assert flagged.loc[3, "reason"] == "its collapse report fires"
    assert flagged.loc[4, "reason"] == "its collapse report has a block whose KL is not finite"
    md = to_markdown(board, COPULA, table.iloc[0:0], None, flagged.reset_index())
    assert "| mmvaeplus | beta=1 | 5 (3 flagged) |" in md and "- mmvaeplus beta=1 seed 2: score 62.2" in md
    assert flagged_seeds(tidy([record(0, 7.5), record(1, 8.3), record(2, 9.0)]), board).empty


def test_leaderboard_of_a_directory_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="neither a sweep"):
        write_leaderboard(tmp_path, tmp_path / "results")
    with pytest.raises(UsageError, match="is not a directory"):
        write_leaderboard(tmp_path / "missing", tmp_path / "results")
    broken = tmp_path / "old-run"
    broken.mkdir()
    (broken / "config.json").write_text('{"model": "gmrf"}')
    (broken / "metrics.json").write_text("{}")
    with pytest.raises(UsageError, match="old-run is not a complete mrfbench run"):
        write_leaderboard(tmp_path, tmp_path / "results")


def test_sweep_cost_counts_endings_training_and_the_union_of_trial_spans():
    def trial(status, start, end, train=None):
        return {"status": status, "started": f"2026-01-01T{start}+00:00", "finished": f"2026-01-01T{end}+00:00",
                "threads": 1, **({"metrics": {"train_wall_time_s": train}} if train else {})}

    records = [trial("ok", "10:00:00", "11:00:00", 3000.0), trial("ok", "10:30:00", "11:30:00", 3000.0),
               trial("stopped", "13:00:00", "13:30:00")]  # a pause from 11:30 to 13:00 (a resumed sweep)
    line = sweep_cost(records)
    assert "3 trials (2 ok, 1 stopped)" in line and "1.7 h of training" in line
    assert "during 2.0 h of wall time" in line and "1 thread(s) each" in line


def test_the_leaderboard_states_each_means_interval_and_the_models_tied_with_the_best():
    """Known answers: gmrf and mvae cannot be told apart on the unconditional figure (Welch, 5%), mopoe can;
    conditionally gmrf is best alone. Intervals are Student t with 2 degrees of freedom."""
    import math

    import pytest

    from mrfbench.aggregation import add_uncertainty, aggregate, leaderboard, tidy, to_markdown
    from mrfbench.datasets import get_benchmark

    figures = {"gmrf": ([5.0, 6.0, 7.0], [1.0, 1.1, 0.9]), "mvae": ([6.0, 7.0, 8.0], [3.0, 3.1, 2.9]),
               "mopoe": ([30.0, 31.0, 29.0], [3.0, 3.2, 2.8])}
    records = [{"model": model, "params": {"beta": 1.0}, "seed": seed, "stage": "final", "status": "ok",
                "metrics": {"score": (u + c) / 2, "unconditional/wasserstein_mean": u, "conditional/wasserstein_mean": c}}
               for model, (uncond, cond) in figures.items() for seed, (u, c) in enumerate(zip(uncond, cond))]
    table, spec = tidy(records), get_benchmark("copula")
    board = add_uncertainty(leaderboard(aggregate(table), spec), table, spec).set_index("model")
    uncond, cond = "unconditional/wasserstein_mean", "conditional/wasserstein_mean"
    assert board.loc["gmrf", f"{uncond} ci95"] == pytest.approx(4.302653 / math.sqrt(3))
    assert board[f"{uncond} best"].to_dict() == {"gmrf": True, "mvae": True, "mopoe": False}
    assert board[f"{cond} best"].to_dict() == {"gmrf": True, "mvae": False, "mopoe": False}
    markdown = to_markdown(board.reset_index(), spec, table.iloc[0:0])
    assert "**6 ± 2.5**" in markdown and "| 7 ± 2.5 |" not in markdown and "95% Student t interval" in markdown
    assert "30 ± 2.5 (" in markdown and "**30" not in markdown


def test_the_chart_shows_units_direction_seeds_and_the_noise_floor(tmp_path):
    from mrfbench.aggregation import add_uncertainty, aggregate, chart_panels, leaderboard, tidy
    from mrfbench.datasets import get_benchmark
    from mrfbench.plots import leaderboard_chart

    records = [{"model": model, "params": {"beta": 1.0}, "seed": seed, "stage": "final", "status": "ok",
                "metrics": {"score": 1.0, "unconditional/wasserstein_mean": value, "conditional/wasserstein_mean": value,
                            "unconditional/floor_wasserstein_mean": 0.9, "conditional/floor_wasserstein_mean": 0.8}}
               for model, values in (("gmrf", [5.0, 6.0, 7.0]), ("mmvae", [300.0, 310.0, 290.0]))
               for seed, value in enumerate(values)]
    table, spec = tidy(records), get_benchmark("copula")
    board = add_uncertainty(leaderboard(aggregate(table), spec), table, spec)
    uncond, cond = chart_panels(board, table, spec)
    assert uncond.title == "uncond mean (x1000, lower is better)"
    assert (uncond.floor, cond.floor) == (pytest.approx(0.9), pytest.approx(0.8))
    assert uncond.seeds == [[5.0, 6.0, 7.0], [300.0, 310.0, 290.0]] and uncond.errors[0] == pytest.approx(2.4841377)
    leaderboard_chart(list(board["model"]), [uncond, cond], "t", tmp_path / "chart.png")  # a log axis, bars from 0
    assert (tmp_path / "chart.png").stat().st_size > 0
