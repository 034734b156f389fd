"""The worker: what one Ray Tune trial runs (the only module a trial's actor imports), and how trials are
named for people."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrfbench.errors import first_line
from mrfbench.evaluators import get_evaluator, run_figures
from mrfbench.runs import write_json
from mrfbench.spaces import TRAIN_KEYS
from mrfbench.sweeps.records import (
    TRIAL_FILE,
    _now,
    epoch_line,
    placement,
    staging_folder,
    trained_as,
)
from mrfbench.sweeps.settings import CHECKPOINT_EVERY_S

STATE_FILE = "training_state.pt"


@dataclass(frozen=True)
class TrialSpec:
    """What one trial runs: a model with its fixed parameters on a data set, at a stage and seed. A trial's
    Tune config is ``{"trial": <TrialSpec as a dict>, <searched parameter>: <value>, ...}``, so the Optuna
    study names each searched parameter plainly (beta, lr, ...)."""

    model: str
    stage: str  # "search" (validation split, ASHA's per-epoch reports) or "final" (test split)
    seed: int
    params: dict[str, Any]
    dataset: str
    epochs: int
    device: str
    cpus: float
    dataset_options: dict[str, Any]
    eval_options: dict[str, Any]
    checkpoint_every_s: float = CHECKPOINT_EVERY_S
    pack_seeds: tuple[int, ...] = ()  # a final-stage pack: these seeds trained as one (``seed`` is the first)
    pack_trials: tuple[dict, ...] = ()  # a search pack: Optuna trials ({"number", "params"}) trained as one
    score_every: int | None = None  # score the weights every N epochs too (the run's learning curve)

    @property
    def runs(self) -> int:
        """The training runs the trial makes: its pack's members, or one."""
        return len(self.pack_trials) or len(self.pack_seeds) or 1

    @classmethod
    def of(cls, config: dict) -> tuple[TrialSpec, dict[str, Any]]:
        """The spec of a Tune config and the trial's parameters (fixed, then searched)."""
        spec = cls(**config["trial"])
        return spec, {**spec.params, **{k: v for k, v in config.items() if k != "trial"}}


def run_trial(config: dict) -> None:
    """Ray Tune trainable: one training run; a failure (NaN, non-PD covariance, OOM, ...) is recorded in
    trial.json with its reason and reported with score NaN, so the sweep goes on."""
    import torch
    from ray import tune

    from mrfbench.allocator import reuse_freed_memory
    from mrfbench.evaluate import EvalConfig
    from mrfbench.experiment import run_experiment
    from mrfbench.training import TrainConfig

    spec, params = TrialSpec.of(config)
    torch.set_num_threads(max(1, int(spec.cpus)))
    reuse_freed_memory()
    trial_dir = Path(tune.get_context().get_trial_dir())
    if spec.pack_seeds or spec.pack_trials:
        from mrfbench.sweeps.packs import run_pack_trial

        tune.report(run_pack_trial(spec, params, trial_dir))
        return
    resume = _saved_state(tune.get_checkpoint())
    record = {"model": spec.model, "stage": spec.stage, "seed": spec.seed, "params": params, "epochs": spec.epochs,
              **placement(), "status": "running", "started": _now(),
              **({"resumed_after_epoch": resume["epoch"]} if resume else {})}
    write_json(trial_dir / TRIAL_FILE, record)
    train_params = {k: v for k, v in params.items() if k in TRAIN_KEYS}
    model_params = {k: v for k, v in params.items() if k not in TRAIN_KEYS}
    try:
        metrics = run_experiment(
            spec.model, spec.dataset, trial_dir / "run", model_options=model_params,
            dataset_options={**spec.dataset_options, "seed": spec.seed},
            train_config=TrainConfig(epochs=spec.epochs, seed=spec.seed, device=spec.device, **train_params),
            eval_config=EvalConfig(seed=spec.seed, **spec.eval_options),
            overwrite=True, eval_split="val" if spec.stage == "search" else "test",
            on_epoch=_epoch_reporter(spec.dataset, spec.stage == "search", spec.checkpoint_every_s),
            resume=resume, staging=staging_folder(trial_dir), score_every=spec.score_every,
        )
        result = run_figures(metrics, spec.dataset)
        record.update(status="ok", metrics=result, **trained_as(params, metrics))
    except Exception as err:  # noqa: BLE001 - any failure is the trial's outcome, recorded with its reason
        result = {"score": math.nan, "failed": 1.0}
        record.update(status="failed", error=f"{type(err).__name__}: {first_line(err)}")
    write_json(trial_dir / TRIAL_FILE, {**record, "finished": _now()})
    tune.report(result)


def trial_name(config: dict) -> str:
    """A trial as people read it: model, stage, seed and its searched parameters."""
    spec, params = TrialSpec.of(config)
    searched = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in params.items() if k not in spec.params)
    if spec.pack_trials:
        return f"{spec.model} {spec.stage} seed {spec.seed} pack of Optuna trials {number_span(spec.pack_trials)}"
    seeds = f"seeds {seed_span(spec.pack_seeds)}" if spec.pack_seeds else f"seed {spec.seed}"
    return f"{spec.model} {spec.stage} {seeds}" + (f" {searched}" if searched else "")


def number_span(pack_trials) -> str:
    """A search pack's Optuna trial numbers as people write them."""
    return seed_span(sorted(t["number"] for t in pack_trials))


def seed_span(seeds) -> str:
    """Seeds as people write them: "0-2", or "0,3" when not consecutive."""
    seeds = list(seeds)
    consecutive = len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1))
    return f"{seeds[0]}-{seeds[-1]}" if consecutive else ",".join(map(str, seeds))


def named_trainable():
    """``run_trial`` as a Tune trainable whose actors the Ray dashboard lists by ``trial_name``."""
    from ray.tune.trainable.function_trainable import wrap_function

    class MrfbenchTrial(wrap_function(run_trial)):
        def __repr__(self):
            return trial_name(self.config) if "trial" in getattr(self, "config", {}) else "mrfbench trial"

    return MrfbenchTrial


def _epoch_reporter(dataset: str, with_proxy: bool, checkpoint_every_s: float):
    """Reports each epoch's losses to Tune (TensorBoard and progress.csv get curves) and, ``with_proxy``
    where the data set's evaluator has a per-epoch ``proxy``, it as ``score`` (what ASHA and Optuna read),
    drawn from a forked random state so that the trial trains exactly as ``mrfbench train`` would; at most
    every ``checkpoint_every_s`` seconds, with the training state as Tune's checkpoint of the trial (one
    kept), which a resumed sweep continues from."""
    import tempfile
    import time

    import torch
    from ray import tune

    from mrfbench.training import forked_rng

    proxy = get_evaluator(dataset).proxy if with_proxy else None
    saved = time.monotonic()

    def report(model, epoch: int, record: dict, snapshot) -> None:
        nonlocal saved
        losses = {key: value for key, value in record.items() if key != "epoch"}
        if proxy is not None:
            device = next(model.parameters()).device
            with forked_rng(device):
                losses["score"] = proxy(model)
        print(epoch_line(epoch, losses), flush=True)  # the trial's log (the Ray dashboard's Log of its actor)
        if time.monotonic() - saved < checkpoint_every_s:
            tune.report(losses)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(snapshot(), Path(folder) / STATE_FILE)
            tune.report(losses, checkpoint=tune.Checkpoint.from_directory(folder))  # copied before it returns
        saved = time.monotonic()

    return report


def _saved_state(checkpoint) -> dict | None:
    """The training state of a trial's last Tune checkpoint (None for a fresh trial)."""
    import torch

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)


def trial_dirname(trial) -> str:
    """Short, readable, unique trial directory names: model, stage, seed and Tune's id (Ray's default spells
    out the whole config)."""
    spec = trial.config.get("trial", {})
    if spec.get("pack_trials"):
        seeds = "optuna" + number_span(spec["pack_trials"]).replace(",", "_")
    elif spec.get("pack_seeds"):
        seeds = "seeds" + seed_span(spec["pack_seeds"]).replace(",", "_")
    else:
        seeds = f"seed{spec.get('seed', '')}"
    return f"{spec.get('model', 'trial')}_{spec.get('stage', '')}_{seeds}_{trial.trial_id}"
