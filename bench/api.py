"""The Python API: what the command line does, as functions for scripts and notebooks.

    import mrfbench
    metrics = mrfbench.train("runs/gmrf", model="gmrf", epochs=20, beta=1.0)
    run = mrfbench.load_run("runs/gmrf")           # model, config, metrics, history
    packed = mrfbench.train("runs/grid", epochs=20, beta=[0.1, 1.0], seed=[0, 1, 2])  # 6 runs as one pack
    mrfbench.sweep("sweeps/quick", space="copula_quick", grid=True)
    trials = mrfbench.load_sweep("sweeps/quick")   # every figure of every trial, one row each
    board = mrfbench.leaderboard("sweeps/quick")   # a row per model: mean and std over seeds
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch


@dataclass
class Run:
    """A finished run of ``mrfbench train`` (or a sweep trial's ``run/``), rebuilt from its folder."""

    folder: Path
    model: torch.nn.Module  # at its best checkpoint, in eval mode
    config: dict  # config.json: the model's, data set's, training's and scoring's settings
    metrics: dict  # metrics.json: every figure
    history: pd.DataFrame  # a row per epoch: losses (and the learning curve's figures where scored)
    dataset: Any  # the data set it trained on; ``dataset.splits()`` regenerates its splits


def train(out: str | Path, model: str = "gmrf", dataset: str | None = None, *, seed: int | Sequence[int] = 0,
          beta: float | Sequence[float] = 1.0, epochs: int = 200, batch_size: int = 256,
          lr: float | Sequence[float] = 1e-3, lr_schedule: str | Sequence[str] = "cosine",
          kl_warmup: float | Sequence[float] = 0.1, precision: str = "fp32", device: str = "auto",
          options: dict | None = None, data: dict | None = None, scoring: dict | None = None, overwrite: bool = False,
          score_every: int | None = None, pack_size: int | None = None) -> dict:
    """Train ``model`` on ``dataset`` (default: the copula data) into the run folder ``out``, score it and
    return its metrics, as `mrfbench train` does. ``options``: model options (`mrfbench models --options`);
    ``data``: data set options (n_train, n_val, n_test, build_dir); ``scoring``: evaluation settings
    (n_unconditional, n_per_tuple, n_image_tuples, ...). A run stopped midway continues when called again
    with the same settings. torch's random state is left as it was (the run seeds its own).

    With a list of values for ``seed``, ``beta``, ``lr``, ``lr_schedule`` or ``kl_warmup``, their product
    trains as one pack (README, "Packed training"), each member into ``out/<name>``, its name the settings that
    vary ("beta=0.1_seed=2"), and the result maps each member's name to its metrics ({"failure": reason} for a
    member that failed). Members finished in ``out`` are kept unless ``overwrite``; ``pack_size``: the most
    members trained at once (default: as many as the device's memory holds, one by one where a timed step
    says packing is slower)."""
    from mrfbench.datasets import DEFAULT_DATASET
    from mrfbench.evaluate import EvalConfig
    from mrfbench.experiment import run_experiment
    from mrfbench.pack_runs import distinct_values, member_grid
    from mrfbench.training import TrainConfig, forked_rng, resolve_device

    def values(value, kind: type, name: str) -> list:  # one value or several
        listed = value if isinstance(value, Iterable) and not isinstance(value, str) else [value]
        return distinct_values([kind(v) for v in listed], name)

    dataset = dataset or DEFAULT_DATASET
    grid = member_grid({"beta": values(beta, float, "beta"), "lr": values(lr, float, "lr"),
                        "lr_schedule": values(lr_schedule, str, "lr_schedule"),
                        "kl_warmup": values(kl_warmup, float, "kl_warmup"), "seed": values(seed, int, "seed")})

    def configs(point: dict) -> tuple[TrainConfig, EvalConfig, dict]:
        train_config = TrainConfig(epochs=epochs, batch_size=batch_size, device=device, precision=precision,
                                   **{name: point[name] for name in ("lr", "lr_schedule", "kl_warmup", "seed")})
        return train_config, EvalConfig(seed=point["seed"], **(scoring or {})), {"seed": point["seed"], **(data or {})}

    with forked_rng(resolve_device(device)):  # the caller's random streams are left as they were
        if len(grid) > 1:
            return _train_pack(model, dataset, Path(out), grid, configs, options or {}, overwrite, score_every,
                               pack_size)
        train_config, eval_config, data_options = configs(grid[0][1])
        return run_experiment(
            model, dataset, Path(out), model_options={"beta": grid[0][1]["beta"], **(options or {})},
            dataset_options=data_options, train_config=train_config, eval_config=eval_config, overwrite=overwrite,
            curves=True, resumable=True, score_every=score_every)


def _train_pack(model: str, dataset: str, out: Path, grid: list, configs, options: dict, overwrite: bool,
                score_every: int | None, pack_size: int | None) -> dict[str, dict]:
    """``train``'s product of settings (``grid``) as packs; each member's metrics (or failure) by name."""
    from mrfbench.errors import UsageError
    from mrfbench.pack_runs import PackMember, planned_packs, run_pack
    from mrfbench.runs import METRICS_FILE, read_json_object

    if score_every is not None:
        raise UsageError("score_every scores one run; train a pack's members one at a time to score them so")
    if "beta" in options:
        raise UsageError("beta is given twice (beta= and options['beta']); give it once")
    members = [PackMember(out / name, {"beta": point["beta"], **options}, *configs(point)) for name, point in grid]
    packs, _ = planned_packs(model, dataset, members, overwrite, pack_size)
    outcomes = {o.out: o for pack in packs for o in run_pack(model, dataset, pack, overwrite, curves=True)}
    results = {}
    for member in members:
        outcome = outcomes.get(member.out)
        if outcome is None:  # finished before this call
            results[member.out.name] = read_json_object(member.out / METRICS_FILE)
        else:
            results[member.out.name] = outcome.metrics if outcome.failure is None else {"failure": outcome.failure}
    return results


def load_run(folder: str | Path, device: str = "auto") -> Run:
    """The run in ``folder``: its model at the best checkpoint, settings, figures and per-epoch history."""
    from mrfbench.experiment import load_run as rebuild
    from mrfbench.runs import HISTORY_FILE, METRICS_FILE, read_json, read_json_object

    folder = Path(folder)
    model, _, dataset, config, _ = rebuild(folder, device)
    metrics = read_json_object(folder / METRICS_FILE) if (folder / METRICS_FILE).exists() else {}
    history = pd.DataFrame(read_json(folder / HISTORY_FILE)) if (folder / HISTORY_FILE).exists() else pd.DataFrame()
    return Run(folder, model, config, metrics, history, dataset)


def sweep(out: str | Path, space: str | None = None, *, models: list[str] | None = None, resume: bool = False,
          **settings) -> Path:
    """Run the sweep of ``space`` (a shipped name or a YAML path) into ``out``, or with ``resume`` continue
    the one there, as `mrfbench sweep` does; ``settings`` are ``SweepSettings`` fields (trials, seeds,
    epochs, grid, sampler, asha, cpus_per_trial, gpus_per_trial, address, storage, packs, dataset_options,
    eval_options, ...). Returns the sweep folder; ``load_sweep`` and ``leaderboard`` read it."""
    from mrfbench.sweeps import Sweep, SweepSettings

    if resume:
        run = Sweep.resume(Path(out), models, {**settings, **({"space": space} if space else {})})
    else:
        run = Sweep.start(SweepSettings(out=str(out), space=space, models=list(models or []), **settings))
    with run.writing():
        run.run()
    return run.out


def load_sweep(folder: str | Path) -> pd.DataFrame:
    """Every trial of a sweep (or every run below a folder of `mrfbench train` runs) as a tidy table: one
    row per trial and figure (model, variant, config, seed, stage, status, error, metric, value)."""
    from mrfbench.aggregation import read_trials

    return read_trials(Path(folder))[1]


def leaderboard(folder: str | Path) -> pd.DataFrame:
    """A sweep's (or a folder of runs') leaderboard: a row per model, its best variant's figures as mean and
    std over seeds beside the paper's; writes nothing (`mrfbench leaderboard` writes the files)."""
    from mrfbench.aggregation import build_leaderboard

    return build_leaderboard(Path(folder)).board


__all__ = ["Run", "leaderboard", "load_run", "load_sweep", "sweep", "train"]
