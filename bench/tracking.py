"""MLflow export: a finished run (a `train` run, a pack member or a sweep trial) as an MLflow run of its
settings, per-epoch losses, final figures and pictures. One function for every command; a sweep calls it
from a Tune callback in its driver as each trial ends."""

from __future__ import annotations

import json
from pathlib import Path

from mrfbench.errors import UsageError
from mrfbench.runs import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, read_json_object

DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow 3 refuses a new ./mlruns file store; SQLite is its local default
PICTURES = ("pairplot.png", "samples.png", "curves.png", "learning_curve.png")


def check_uri(uri: str) -> None:
    """A tracking URI MLflow can open (a database URL, http(s)://, or databricks)."""
    if not uri.startswith(("sqlite:///", "postgresql://", "mysql://", "http://", "https://", "databricks")):
        raise UsageError(f"--mlflow takes a tracking URI such as {DEFAULT_URI} or http://host:5000, got '{uri}'")


def flat_settings(config: dict) -> dict[str, str]:
    """config.json as MLflow params: the model, the data set and every model, data, training and scoring
    setting as '<section>.<name>'."""
    params = {"model": config["model"], "dataset": config["dataset"]}
    for section in ("model_config", "dataset_config", "train", "eval"):
        for key, value in (config.get(section) or {}).items():
            params[f"{section.removesuffix('_config')}.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return params


def log_run(uri: str, experiment: str, run_dir: Path, name: str, tags: dict | None = None,
            figures: dict[str, float] | None = None) -> str:
    """Log the finished run in ``run_dir`` to MLflow at ``uri`` under ``experiment`` as ``name``: params from
    its config, each epoch's losses at their epoch, ``figures`` (default: its figures,
    ``run_figures``), its pictures and JSON files as artefacts. Returns the MLflow run id."""
    import mlflow

    from mrfbench.evaluators import run_figures

    run_dir = Path(run_dir)
    config = read_json_object(run_dir / CONFIG_FILE)
    if figures is None:
        figures = run_figures(read_json_object(run_dir / METRICS_FILE), config["dataset"])
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location=_artefacts(uri))
    run = client.create_run(experiment_id, run_name=name, tags={"mrfbench.run_dir": str(run_dir.resolve()),
                                                                **(tags or {})})
    run_id = run.info.run_id
    client.log_batch(run_id, params=[mlflow.entities.Param(k, v[:6000]) for k, v in flat_settings(config).items()])
    steps = [mlflow.entities.Metric(key, float(value), 0, record["epoch"])
             for record in json.loads((run_dir / HISTORY_FILE).read_text())
             for key, value in record.items() if key != "epoch" and isinstance(value, (int, float))]
    final = [mlflow.entities.Metric(_metric_name(key), float(value), 0, 0) for key, value in figures.items()]
    for start in range(0, len(steps) + len(final), 1000):
        client.log_batch(run_id, metrics=(steps + final)[start : start + 1000])
    for artefact in (*PICTURES, CONFIG_FILE, METRICS_FILE, HISTORY_FILE):
        if (run_dir / artefact).exists():
            client.log_artifact(run_id, str(run_dir / artefact))
    client.set_terminated(run_id)
    return run_id


def _artefacts(uri: str) -> str | None:
    """Where a new experiment keeps its artefacts: beside a SQLite store (``mlartifacts/``), rather than in
    ``./mlruns`` of whatever folder the command ran in; a server's own choice otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


def _metric_name(key: str) -> str:
    """MLflow metric names allow '/', '.', '-', '_' and alphanumerics: the flattened keys pass as they are."""
    return key.replace(" ", "_")
