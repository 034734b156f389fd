"""A sweep trial that trains several runs as one pack: a final config's seeds, or the Optuna trials of a
search round that share their tensors' shapes. Each member is recorded as a trial of its own
(``seed<N>/trial.json`` or ``optuna<N>/trial.json`` beside its run), so the results table, the leaderboard
and the studies read members as they read trials; members already recorded as finished are not trained
again."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from mrfbench.errors import first_line
from mrfbench.evaluators import run_figures
from mrfbench.runs import read_json_object, write_json
from mrfbench.spaces import TRAIN_KEYS
from mrfbench.sweeps.records import (
    TRIAL_FILE,
    _now,
    epoch_line,
    is_final,
    placement,
    staging_folder,
    trained_as,
)

if TYPE_CHECKING:
    from mrfbench.sweeps.trial import TrialSpec


def pack_members(spec: TrialSpec, params: dict) -> list[tuple[str, int, dict]]:
    """A pack trial's members as (folder name, seed, parameters): a final config over its seeds
    (``seed<N>``), or the Optuna trials of a search pack, each with its suggested values on the stage's seed
    (``optuna<N>``, N its trial number in the study)."""
    if spec.pack_trials:
        return [(f"optuna{t['number']}", spec.seed, {**params, **t["params"]}) for t in spec.pack_trials]
    return [(f"seed{seed}", seed, params) for seed in spec.pack_seeds]


def _finished(trial_dir: Path, name: str) -> dict | None:
    """The member's record where it is its last (``records.is_final``)."""
    path = Path(trial_dir) / name / TRIAL_FILE
    if path.is_file():
        record = read_json_object(path)
        if is_final(record):
            return record
    return None


def run_pack_trial(spec: TrialSpec, params: dict, trial_dir: Path) -> dict:
    """Train the members of the pack (``pack_members``) not yet finished as one pack (as several where the
    device's memory says so: ``pack_runs.choose_pack_size``), record each, and return what the trial reports
    to Tune: the members' mean score (NaN, and ``failed``, when none was scored) and each member's score
    (``member_scores``, NaN for a failed one), which a search tells Optuna."""
    from mrfbench.evaluate import EvalConfig
    from mrfbench.pack_runs import MemberOutcome, PackMember, choose_pack_size, run_pack
    from mrfbench.training import TrainConfig

    names = pack_members(spec, params)
    members, records = [], {}
    for name, seed, member_params in names:
        if _finished(trial_dir, name):
            continue
        folder = Path(trial_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        records[name] = {"model": spec.model, "stage": spec.stage, "seed": seed, "params": member_params,
                         "epochs": spec.epochs, **placement(), "pack_size": len(names), "status": "running",
                         "started": _now(), **({"pack_seeds": list(spec.pack_seeds)} if spec.pack_seeds else {}),
                         **({"optuna_trial": int(name.removeprefix("optuna"))} if spec.pack_trials else {})}
        write_json(folder / TRIAL_FILE, records[name])
        train_params = {k: v for k, v in member_params.items() if k in TRAIN_KEYS}
        members.append(PackMember(
            folder / "run", {k: v for k, v in member_params.items() if k not in TRAIN_KEYS},
            TrainConfig(epochs=spec.epochs, seed=seed, device=spec.device, **train_params),
            EvalConfig(seed=seed, **spec.eval_options), {**spec.dataset_options, "seed": seed}))
    if members:
        try:
            size, _ = choose_pack_size(spec.model, spec.dataset, members[0], len(members), timed=False)
            outcomes = []
            for start in range(0, len(members), size):
                outcomes += run_pack(spec.model, spec.dataset, members[start : start + size], overwrite=True,
                                     eval_split="val" if spec.stage == "search" else "test",
                                     on_epoch=_epoch_reporter(), staging=staging_folder(trial_dir))
        except Exception as err:  # noqa: BLE001 - a failure of the whole pack is each member's outcome
            outcomes = [MemberOutcome(m.out, failure=f"{type(err).__name__}: {first_line(err)}") for m in members]
        for member, outcome in zip(members, outcomes):
            name = member.out.parent.name
            record, failure = records[name], outcome.failure
            if failure is None:
                try:
                    record.update(status="ok", metrics=run_figures(outcome.metrics, spec.dataset),
                                  **trained_as(record["params"], outcome.metrics))
                except (KeyError, ValueError) as err:  # the evaluator's metrics lack a declared figure
                    failure = f"{type(err).__name__}: {first_line(err)}"
            if failure is not None:
                record.update(status="failed", error=failure.strip().splitlines()[0])
            write_json(Path(trial_dir) / name / TRIAL_FILE, {**record, "finished": _now()})
    done = {name: _finished(trial_dir, name) for name, _, _ in names}
    scores = {name: r["metrics"]["score"] if r and r["status"] == "ok" else math.nan for name, r in done.items()}
    scored = [r["metrics"] for r in done.values() if r and r["status"] == "ok"]
    if not scored:
        return {"score": math.nan, "failed": 1.0, "member_scores": scores}
    return {"score": sum(m["score"] for m in scored) / len(scored), "members_scored": float(len(scored)),
            "train_wall_time_s": max(m["train_wall_time_s"] for m in scored), "member_scores": scores}


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
