"""A folder of ``mrfbench train`` runs, read as a sweep's trial records for its leaderboard."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mrfbench.errors import UsageError
from mrfbench.evaluators import run_figures
from mrfbench.runs import CONFIG_FILE, METRICS_FILE, check_one_run, is_finished_run, is_staging, read_json_object
from mrfbench.sweeps import SWEEP_FILE


def run_records(directory: Path) -> tuple[str, list[dict]]:
    """The data set and a record for every finished ``mrfbench train`` run below ``directory`` (a config.json
    beside a metrics.json): stage 'search' when scored on the validation split, else 'final'; a run's variant
    is beta, its epochs and every model option it set away from the model's default."""
    from mrfbench.models import get_model_class

    records, datasets, seen = [], set(), {}
    for metrics_file in sorted(Path(directory).glob(f"**/{METRICS_FILE}")):
        if is_staging(metrics_file.parent) or not is_finished_run(metrics_file.parent):
            continue
        config, metrics = read_json_object(metrics_file.parent / CONFIG_FILE), read_json_object(metrics_file)
        check_one_run(metrics_file.parent, config, metrics)
        try:
            options = config["model_config"]
            shape = {k: options[k] for k in ("n_modalities", "modality_dim")}
            default = dataclasses.asdict(get_model_class(config["model"]).config_class(**shape))
            params = {k: v for k, v in options.items() if k == "beta" or default.get(k) != v}
            params["epochs"] = config["train"]["epochs"]
            stage = "search" if metrics.get("training", {}).get("eval_split") == "val" else "final"
            record = {"model": config["model"], "params": params, "seed": config["train"]["seed"],
                      "stage": stage, "status": "ok",
                      "metrics": run_figures(metrics, config["dataset"])}
        except (KeyError, TypeError, ValueError) as err:
            raise UsageError(f"run {metrics_file.parent} is not a complete mrfbench run "
                             f"({type(err).__name__}: {err}); move it out of {directory}") from None
        key = (record["model"], json.dumps(params, sort_keys=True), record["seed"], stage)
        if key in seen:
            raise UsageError(f"runs {seen[key]} and {metrics_file.parent} repeat one model, variant, seed and split; "
                             "keep one so the seed counts once")
        seen[key] = metrics_file.parent
        datasets.add(config["dataset"])
        records.append(record)
    if not records:
        raise UsageError(f"{directory} holds neither a sweep ({SWEEP_FILE}) nor finished runs ({METRICS_FILE})")
    if len(datasets) > 1:
        raise UsageError(f"runs below {directory} mix data sets ({', '.join(sorted(datasets))}); one table each")
    return datasets.pop(), records
