"""--mlflow: runs and sweep trials logged to a real MLflow store, read back with MLflow's own client."""

import mlflow
import pytest
from typer.testing import CliRunner

from mrfbench.cli import app

TINY = ["--epochs", "2", "--n-train", "128", "--n-val", "32", "--n-test", "16", "--batch-size", "64",
        "--n-unconditional", "1000", "--n-per-tuple", "2", "--device", "cpu", "--threads", "1"]


def test_train_logs_each_run_with_params_curves_figures_and_pictures(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "runs"), *TINY, "--seed", "0,1",
                                      "--pack-size", "2", "--mlflow", uri])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mrfbench train copula")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["train.seed"] for r in runs) == ["0", "1"]
    run = runs[0]
    assert run.data.params["model"] == "gmrf" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    assert run.data.metrics["unconditional/wasserstein_mean"] > 0
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert (tmp_path / "mlartifacts").is_dir()  # beside the store, not in the working folder
    assert {"pairplot.png", "curves.png", "metrics.json", "config.json"} <= artefacts


def test_a_tracking_uri_mlflow_cannot_open_is_refused_before_training(tmp_path):
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r"), *TINY, "--mlflow", "./mlruns"])
    assert result.exit_code == 2 and "--mlflow takes a tracking URI" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_sweep_logs_every_trial_and_every_pack_member(local_ray, tmp_path):
    from mrfbench.sweeps import Sweep, SweepSettings

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = SweepSettings(out=str(tmp_path / "SW"), space="copula_quick", models=["gmrf"], grid=True, seeds=2,
                             epochs=1, mlflow=uri, dataset_options={"n_train": 128, "n_val": 32, "n_test": 16},
                             eval_options={"n_unconditional": 1000, "n_per_tuple": 2})
    Sweep.start(settings).run()
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mrfbench sweep SW").experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]  # one pack trial, two members
    assert all(r.data.tags["stage"] == "final" and "score" in r.data.metrics for r in runs)
