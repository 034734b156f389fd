"""A sweep trial that trains a config's seeds as one pack: each member recorded as a trial of its own
(``seed<N>/trial.json`` beside its run), so the results table, the leaderboard and the studies read members
as they read trials; members already recorded as finished are not trained again."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from mrfbench.datasets import get_benchmark
from mrfbench.runs import read_json_object, write_json
from mrfbench.spaces import TRAIN_KEYS
from mrfbench.sweeps.records import (
    TRIAL_FILE,
    _now,
    epoch_line,
    first_line,
    flatten_metrics,
    placement,
    staging_folder,
)

if TYPE_CHECKING:
    from mrfbench.sweeps.trial import TrialSpec


def member_folder(trial_dir: Path, seed: int) -> Path:
    return Path(trial_dir) / f"seed{seed}"


def _finished(trial_dir: Path, seed: int) -> dict | None:
    path = member_folder(trial_dir, seed) / TRIAL_FILE
    if path.is_file():
        record = read_json_object(path)
        if record.get("status") in ("ok", "failed"):
            return record
    return None


def run_pack_trial(spec: TrialSpec, params: dict, trial_dir: Path) -> dict:
    """Train the members of ``spec.pack_seeds`` not yet finished as one pack (as several where the device's
    memory says so: ``pack_runs.choose_pack_size``; a sweep that packs nothing runs with --no-packs), record
    each, and return what the trial reports to Tune: the members' mean score (NaN, and ``failed``, when none
    was scored)."""
    from mrfbench.evaluate import EvalConfig
    from mrfbench.pack_runs import MemberOutcome, PackMember, choose_pack_size, run_pack
    from mrfbench.training import TrainConfig

    train_params = {k: v for k, v in params.items() if k in TRAIN_KEYS}
    model_params = {k: v for k, v in params.items() if k not in TRAIN_KEYS}
    benchmark = get_benchmark(spec.dataset)
    members, records = [], {}
    for seed in spec.pack_seeds:
        if _finished(trial_dir, seed):
            continue
        folder = member_folder(trial_dir, seed)
        folder.mkdir(parents=True, exist_ok=True)
        records[seed] = {"model": spec.model, "stage": spec.stage, "seed": seed, "params": params,
                         "epochs": spec.epochs, **placement(), "pack_seeds": list(spec.pack_seeds),
                         "status": "running", "started": _now()}
        write_json(folder / TRIAL_FILE, records[seed])
        members.append(PackMember(
            folder / "run", model_params,
            TrainConfig(epochs=spec.epochs, seed=seed, device=spec.device, **train_params),
            EvalConfig(seed=seed, **spec.eval_options), {**spec.dataset_options, "seed": seed}))
    if members:
        try:
            size, _ = choose_pack_size(spec.model, spec.dataset, members[0], len(members), timed=False)
            outcomes = []
            for start in range(0, len(members), size):
                outcomes += run_pack(spec.model, spec.dataset, members[start : start + size], overwrite=True,
                                     eval_split="test", on_epoch=_epoch_reporter(), staging=staging_folder(trial_dir))
        except Exception as err:  # noqa: BLE001 - a failure of the whole pack is each member's outcome
            outcomes = [MemberOutcome(m.out, failure=f"{type(err).__name__}: {first_line(err)}") for m in members]
        for member, outcome in zip(members, outcomes):
            record = records[member.train.seed]
            if outcome.failure is None:
                record.update(status="ok", metrics=flatten_metrics(outcome.metrics, benchmark))
            else:
                record.update(status="failed", error=outcome.failure.strip().splitlines()[0])
            write_json(member_folder(trial_dir, member.train.seed) / TRIAL_FILE, {**record, "finished": _now()})
    scored = [r["metrics"] for s in spec.pack_seeds if (r := _finished(trial_dir, s)) and r["status"] == "ok"]
    if not scored:
        return {"score": math.nan, "failed": 1.0}
    return {"score": sum(m["score"] for m in scored) / len(scored), "members_scored": float(len(scored)),
            "train_wall_time_s": max(m["train_wall_time_s"] for m in scored)}


def _epoch_reporter():
    """Each epoch's mean losses over the pack's running members, reported to Tune (its curves)."""
    from ray import tune

    def report(epoch: int, records: list[dict | None]) -> None:
        alive = [r for r in records if r is not None]
        if alive:
            means = {key: sum(r[key] for r in alive) / len(alive) for key in alive[0] if key != "epoch"}
            print(epoch_line(epoch, means) + f" (mean of {len(alive)} members)", flush=True)
            tune.report(means)

    return report
