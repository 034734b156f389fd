"""The Python API: what the command line does, as functions for scripts and notebooks.

    import mrfbench
    metrics = mrfbench.training("runs/gmrf", model="gmrf", epochs=20, beta=1.0)
    run = mrfbench.load_run("runs/gmrf")           # model, config, metrics, history
    mrfbench.sweeps("sweeps/quick", space="copula_quick", grid=True)
    trials = mrfbench.load_sweep("sweeps/quick")   # every figure of every trial, one row each
    board = mrfbench.aggregation("sweeps/quick")   # a row per model: mean and std over seeds
"""

from __future__ import annotations

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


def train(out: str | Path, model: str = "gmrf", dataset: str | None = None, *, seed: int = 0, beta: float = 1.0,
          epochs: int = 200, batch_size: int = 256, lr: float = 1e-3, lr_schedule: str = "cosine",
          kl_warmup: float = 0.1, precision: str = "fp32", device: str = "auto", options: dict | None = None,
          data: dict | None = None, scoring: dict | None = None, overwrite: bool = False,
          score_every: int | None = None) -> dict:
    """Train ``model`` on ``dataset`` (default: the copula data) into the run folder ``out``, score it and
    return its metrics, as `mrfbench train` does. ``options``: model options (`mrfbench models --options`);
    ``data``: data set options (n_train, n_val, n_test, build_dir); ``scoring``: evaluation settings
    (n_unconditional, n_per_tuple, n_image_tuples, ...). A run stopped midway continues when called again
    with the same settings."""
    from mrfbench.datasets import DEFAULT_DATASET
    from mrfbench.evaluate import EvalConfig
    from mrfbench.experiment import run_experiment
    from mrfbench.training import TrainConfig

    return run_experiment(
        model, dataset or DEFAULT_DATASET, Path(out), model_options={"beta": beta, **(options or {})},
        dataset_options={"seed": seed, **(data or {})},
        train_config=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, seed=seed,
                                 device=device, kl_warmup=kl_warmup, precision=precision),
        eval_config=EvalConfig(seed=seed, **(scoring or {})), overwrite=overwrite, curves=True, resumable=True,
        score_every=score_every)


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
