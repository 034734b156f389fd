"""What a sweep leaves on disk about its trials: each trial's ``trial.json`` (with the figures it reports,
``evaluators.run_figures``), the results table, and reading them back."""

from __future__ import annotations

import math
import os
from pathlib import Path

from mrfbench.runs import atomic_write, read_json_object, write_json

TRIAL_FILE = "trial.json"
PACK_MEMBER = "*"  # the member folders of a pack trial: seed<N> (a final config's seeds), optuna<N> (a search pack)
RESULTS_FILE = "results.csv"


def epoch_line(epoch: int, figures: dict) -> str:
    """An epoch as the trial's log shows it: its number and each loss (and proxy score)."""
    return f"epoch {epoch}: " + ", ".join(f"{key} {value:.4g}" for key, value in figures.items()
                                          if isinstance(value, (int, float)))


def staging_folder(trial_dir: Path) -> Path:
    """Where a trial writes its runs until they are complete: outside its Tune folder, which Tune copies
    into the sweep folder as it goes (a run half written there would be copied in and never removed), on
    the same filesystem (two levels up: the Tune session's folder of the experiment)."""
    return Path(trial_dir).parent.parent / ".mrfbench-staging"


def placement() -> dict:
    """Where a trial runs: its Ray node, its torch threads and the GPUs Ray gave it (CUDA_VISIBLE_DEVICES)."""
    import ray
    import torch

    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "threads": torch.get_num_threads(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _now() -> str:
    import datetime

    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def mark_stopped(trial_dir: Path, last_result: dict) -> None:
    """Record a trial Tune has completed while its ``trial.json`` still says running (the scheduler stopped it
    before it was scored) as stopped, with the epoch it reached."""
    path = Path(trial_dir) / TRIAL_FILE
    if not path.is_file():
        return
    record = read_json_object(path)
    if record.get("status") == "running":
        write_json(path, {**record, "status": "stopped", "stopped_epoch": last_result.get("training_iteration"),
                          "finished": _now()})


def mark_died(trial_dir: Path, reason: str) -> None:
    """Record a trial whose worker process died (killed, out of memory) as failed with ``reason``: its
    ``trial.json``, or its pack members', that still say running; ``worker_died`` marks them for a resumed
    sweep to train again."""
    for path in [Path(trial_dir) / TRIAL_FILE, *sorted(Path(trial_dir).glob(f"{PACK_MEMBER}/{TRIAL_FILE}"))]:
        record = read_json_object(path) if path.is_file() else {}
        if record.get("status") == "running":
            write_json(path, {**record, "status": "failed", "error": reason, "worker_died": True, "finished": _now()})


def write_results_table(sweep_dir: Path) -> Path:
    """``results.csv`` in the sweep directory: one row per trial (folder, model, stage, seed, status, error,
    epochs, start and end, each parameter as ``param_<name>``, each figure), written atomically."""
    import pandas as pd

    rows = []
    for path in sorted(trial_files(sweep_dir)):
        record = read_json_object(path)
        folder = path.parent.relative_to(sweep_dir)
        rows.append({"trial": "/".join(folder.parts[1:]), "path": str(folder),
                     **{k: record.get(k) for k in ("model", "stage", "seed", "status", "error", "epochs",
                                                   "stopped_epoch", "started", "finished")},
                     **{f"param_{k}": v for k, v in record.get("params", {}).items()}, **(record.get("metrics") or {})})
    path = Path(sweep_dir) / RESULTS_FILE
    atomic_write(path, lambda h: h.write(pd.DataFrame(rows).to_csv(index=False).encode()))
    return path


def results_records(directory: Path) -> list[dict]:
    """Every trial.json below ``directory``."""
    return [read_json_object(p) for p in sorted(Path(directory).glob(f"**/{TRIAL_FILE}"))]


def finished_runs(sweep_dir: Path) -> tuple[int, int]:
    """Runs of the sweep in ``sweep_dir`` that a resumed sweep does not train again, as (done, failed): trials
    and pack members scored, stopped by the scheduler, or failed with their worker alive (those whose worker
    died train again)."""
    records = [r for r in map(read_json_object, trial_files(sweep_dir)) if is_final(r)]
    failed = sum(r["status"] == "failed" for r in records)
    return len(records) - failed, failed


def trained_as(params: dict, metrics: dict) -> dict:
    """A finished trial's record entry for what its run changed of the ``params`` asked of it (bf16 on a
    device without it trains in fp32), so that the leaderboard names the variant as it trained."""
    precision = metrics.get("training", {}).get("precision")
    if "precision" in params and precision and precision != params["precision"]:
        return {"trained_as": {"precision": precision}}
    return {}


def is_final(record: dict) -> bool:
    """Whether a trial's or pack member's record is its last: scored, stopped by the scheduler, or failed
    with its worker alive (one whose worker died trains again)."""
    return record.get("status") in ("ok", "stopped") or (record.get("status") == "failed" and not record.get("worker_died"))


def trial_files(sweep_dir: Path) -> list[Path]:
    """The ``trial.json`` of every trial of the sweep in ``sweep_dir`` and of every pack member."""
    return [*Path(sweep_dir).glob(f"*/*/{TRIAL_FILE}"), *Path(sweep_dir).glob(f"*/*/{PACK_MEMBER}/{TRIAL_FILE}")]


def best_params(records: list[dict], fixed: dict) -> dict | None:
    """Parameters of the finished trial with the lowest score (None if every trial failed)."""
    done = [r for r in records if r.get("status") == "ok" and isinstance(r["metrics"].get("score"), (int, float))
            and math.isfinite(r["metrics"]["score"])]
    if not done:
        return None
    return {**fixed, **min(done, key=lambda r: r["metrics"]["score"])["params"]}
