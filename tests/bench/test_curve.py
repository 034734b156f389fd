"""Learning curves: the table's figures scored every N epochs while training, without changing the training."""

import csv
import json
import shutil
import time

from typer.testing import CliRunner

from mrfbench.cli import app
from mrfbench.evaluators import get_evaluator

RUN = ["--epochs", "3", "--n-train", "256", "--n-val", "64", "--n-test", "32", "--batch-size", "64",
       "--n-unconditional", "2000", "--n-per-tuple", "2", "--device", "cpu", "--threads", "1"]


def test_a_curve_scores_every_nth_and_the_last_epoch_and_leaves_training_as_it_was(tmp_path, read_scalars):
    plain = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "plain"), *RUN])
    scored = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "scored"), *RUN, "--score-every", "2"])
    assert plain.exit_code == 0 and scored.exit_code == 0, scored.output
    history = json.loads((tmp_path / "scored" / "history.json").read_text())
    losses = [{k: v for k, v in r.items() if not k.startswith("curve/")} for r in history]
    assert losses == json.loads((tmp_path / "plain" / "history.json").read_text())
    with open(tmp_path / "scored" / "learning_curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    evaluator = get_evaluator("copula")
    assert [r["epoch"] for r in rows] == ["2", "3"]
    assert set(rows[0]) - {"epoch"} == {c.key for c in evaluator.paper + evaluator.beyond} & set(rows[0])
    assert {c.key for c in evaluator.paper} <= set(rows[0])
    assert all(float(v) > 0 for r in rows for v in r.values())
    assert (tmp_path / "scored" / "learning_curve.png").stat().st_size > 0
    key = f"curve/{evaluator.paper[0].key}"
    assert [step for step, _ in read_scalars(tmp_path / "scored")[key]] == [2, 3]
    assert not (tmp_path / "plain" / "learning_curve.csv").exists()

    shutil.copytree(tmp_path / "scored", tmp_path / "board" / "scored")  # the leaderboard gathers every curve
    board = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "board"), "--publish", str(tmp_path / "pub")])
    assert board.exit_code == 0, board.output
    for folder in (tmp_path / "board", tmp_path / "pub" / "copula"):
        with open(folder / "learning_curves.csv") as handle:
            gathered = list(csv.DictReader(handle))
        assert [{k: r[k] for k in ("run", "model", "seed", "beta")} for r in gathered] == [
            {"run": "scored", "model": "gmrf", "seed": "0", "beta": "1.0"}] * 2
        assert [[float(r[k]) for k in rows[0]] for r in gathered] == [[float(v) for v in r.values()] for r in rows]
        assert (folder / "learning_curves.png").stat().st_size > 0 and (folder / "trials.csv").stat().st_size > 0


def test_a_curve_needs_a_positive_period_and_one_run(tmp_path):
    zero = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "a"), *RUN, "--score-every", "0"])
    assert zero.exit_code == 2 and "--score-every must be >= 1" in zero.stderr
    pack = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "b"), *RUN, "--score-every", "1", "--seed", "0,1"])
    assert pack.exit_code == 2 and "--score-every scores one run" in pack.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_runs_tensorboard_record_is_live_and_ends_with_its_settings_figures_and_pictures(tmp_path, read_scalars):
    from mrfbench.evaluate import EvalConfig
    from mrfbench.experiment import run_experiment
    from mrfbench.training import TrainConfig

    seen = {}

    def look(model, epoch, record, snapshot):  # while training: the staged run's record holds this epoch within 1 s
        (staged,) = tmp_path.glob(".R.partial-*")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            seen[epoch] = [step for step, _ in read_scalars(staged).get("train_loss", [])]
            if epoch in seen[epoch]:
                break
            time.sleep(0.1)

    run_experiment("gmrf", "copula", tmp_path / "R", dataset_options={"n_train": 256, "n_val": 64, "n_test": 32},
                   train_config=TrainConfig(epochs=2, batch_size=64, device="cpu"),
                   eval_config=EvalConfig(n_unconditional=2000, n_per_tuple=2),
                   curves=True, on_epoch=look)
    assert seen == {1: [1], 2: [1, 2]}
    scalars = read_scalars(tmp_path / "R")
    assert [step for step, _ in scalars["val_loss"]] == [1, 2]
    assert "final/unconditional/wasserstein_mean" in scalars and "final/dependence/kendall_tau_mae" in scalars
    assert {"pairplot", "curves"} <= set(scalars)  # the pictures, as images
