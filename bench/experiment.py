"""One training run end to end (the unit a sweep trial runs): train, keep the best checkpoint, score, plot."""

from __future__ import annotations

import dataclasses
import math
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mrfbench.curve import curve_point, write_curve, write_loss_plot
from mrfbench.datasets import get_benchmark
from mrfbench.errors import UsageError
from mrfbench.evaluate import EvalConfig
from mrfbench.evaluators import added_metrics, get_evaluator
from mrfbench.models import MultimodalVAE, build_model, get_model_class
from mrfbench.resume import StateSaver, load_state
from mrfbench.runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CURVE_PLOT,
    HISTORY_FILE,
    LOSS_PLOT,
    METRICS_FILE,
    PAIRPLOT_FILE,
    SAMPLE_GRID_FILE,
    Curves,
    atomic_write,
    check_one_run,
    load_checkpoint,
    read_json_object,
    require_run_dir,
    require_writable,
    run_lock,
    save_checkpoint,
    staged_run,
    write_json,
)
from mrfbench.training import Snapshot, TrainConfig, resolve_device, resolve_precision, seed_everything, train
from mrfbench.version import __version__

EVAL_SPLITS = ("test", "val")  # 'val' scores a search run (choosing beta) without touching the test split


def model_for_data(model_name: str, model_options: dict, spec, dataset):
    """The registered model ``model_name`` with ``model_options``, shaped for ``dataset`` (its modalities and
    their size) and built with its spec's architecture unless the options name another."""
    derived = sorted({"n_modalities", "modality_dim"} & set(model_options))
    if derived:
        raise UsageError(f"{', '.join(derived)} come(s) from the data set and cannot be set")
    return build_model(
        model_name,
        n_modalities=dataset.n_modalities,
        modality_dim=math.prod(dataset.modality_shape),
        **{"architecture": spec.architecture, **model_options},
    )


def run_experiment(
    model_name: str,
    dataset_name: str,
    out_dir: Path,
    model_options: dict | None = None,
    dataset_options: dict | None = None,
    train_config: TrainConfig | None = None,
    eval_config: EvalConfig | None = None,
    overwrite: bool = False,
    on_epoch: Callable[[MultimodalVAE, int, dict, Snapshot], None] | None = None,
    eval_split: str = "test",
    curves: bool = False,
    resume: dict | None = None,
    resumable: bool = False,
    score_every: int | None = None,
    staging: Path | None = None,
) -> dict:
    """Train ``model_name`` on ``dataset_name``, write config, history, checkpoint, metrics and pair plot
    into ``out_dir`` (with ``curves``, also the losses as TensorBoard scalars) and return the metrics. All
    inputs are validated before any training starts. ``eval_split`` is the split conditional generation is
    scored on ('val' while searching). ``resume`` is a training state ``on_epoch``'s snapshot gave (the run
    continues from it); ``resumable`` keeps that state beside ``out_dir`` while training and continues from
    it when the same run is started again (``mrfbench.resume``). ``score_every`` N scores the weights every
    N epochs and after the last one, on fewer samples (a learning curve: ``mrfbench.curve``). ``staging``:
    where the run is written until complete (``runs.staged_run``)."""
    check_split(eval_split)
    train_config = train_config or TrainConfig()
    eval_config = eval_config or EvalConfig()
    model_options, dataset_options = dict(model_options or {}), dict(dataset_options or {})
    spec = get_benchmark(dataset_name)
    check_precision(spec, model_name, train_config.precision)
    dataset = spec.make(**dataset_options)
    device = resolve_device(train_config.device)
    train_config = dataclasses.replace(train_config, precision=resolve_precision(train_config.precision, device))
    seed_everything(train_config.seed)
    model = model_for_data(model_name, model_options, spec, dataset)
    config = run_config(model, dataset_name, dataset, train_config, eval_config)
    saver = StateSaver(Path(out_dir), config, train_config.epochs) if resumable else None
    if resumable:
        resume = load_state(Path(out_dir), config, overwrite)
    with staged_run(Path(out_dir), overwrite, staging) as out:  # moved to out_dir only once complete
        if saver is not None and overwrite:
            saver.finished()  # the state of the run this one replaces
        write_json(out / CONFIG_FILE, config)
        splits = {name: split.to(device) for name, split in dataset.splits().items()}
        model.to(device)

        live = Curves(out, resume["history"] if resume else []) if curves else None

        def epoch_done(epoch: int, record: dict, snapshot: Snapshot) -> None:
            if live is not None:
                live.epoch(record)
            if saver is not None:
                saver(epoch, snapshot)
            if on_epoch is not None:
                on_epoch(model, epoch, record, snapshot)

        def figures(epoch: int) -> dict:
            if epoch % score_every and epoch != train_config.epochs:
                return {}
            return curve_point(model, spec, dataset, splits[eval_split], eval_split, eval_config, device)

        result = train(model, splits["train"], splits["val"], train_config, epoch_done, resume,
                       figures if score_every else None)
        metrics = finish_run(model, result, config, spec, dataset, splits[eval_split], eval_split, eval_config,
                             device, out, live)
        if saver is not None:
            saver.finished()
        return metrics


def check_precision(spec, model_name: str, precision: str) -> None:
    if precision == "bf16":
        for name, reason in ((spec.name, spec.bf16), (model_name, get_model_class(model_name).bf16_refused)):
            if reason:
                raise UsageError(f"--precision bf16 is refused for {name}: {reason}")


def run_config(model: MultimodalVAE, dataset_name: str, dataset, train_config: TrainConfig, eval_config: EvalConfig) -> dict:
    """What config.json holds."""
    return {
        "mrfbench_version": __version__,
        "model": model.name,
        "model_config": dataclasses.asdict(model.config),
        "capacity": model.capacity,
        "dataset": dataset_name,
        "dataset_config": dataclasses.asdict(dataset.config),
        "train": dataclasses.asdict(train_config),
        "eval": dataclasses.asdict(eval_config),
    }


def finish_run(model: MultimodalVAE, result, config: dict, spec, dataset, data: torch.Tensor, eval_split: str,
               eval_config: EvalConfig, device, out: Path, curves: Curves | None, extra: dict | None = None) -> dict:
    """After training: the best state into ``model``, history, checkpoint, then the scores; returns the
    metrics. ``curves``: the run's TensorBoard record (None: none), finished with its settings, final figures
    and pictures. ``extra`` goes into the metrics' training section."""
    model.load_state_dict(result.best_state)
    write_json(out / HISTORY_FILE, result.history)
    write_curve(out, result.history)
    write_loss_plot(out, result.history)
    save_checkpoint(out / CHECKPOINT_FILE, {"model_state": result.best_state, "config": config})
    training = {
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "wall_time_s": round(result.wall_time_s, 2),
        "device": str(device),
        "precision": config["train"]["precision"],  # bf16 asked of a device without it trains in fp32
        "torch": torch.__version__,
        "machine": platform.machine(),
        **(extra or {}),
    }
    metrics = score_run(model, spec, dataset, eval_split, data, eval_config, device, out,
                        {**training, "eval_split": eval_split})
    if curves is not None:
        from mrfbench.curve import table_figures
        from mrfbench.tracking import flat_settings

        curves.finish(flat_settings(config), table_figures(metrics, spec.name),
                      [out / name for name in (PAIRPLOT_FILE, SAMPLE_GRID_FILE, LOSS_PLOT, CURVE_PLOT)])
    return metrics


def check_split(split: str) -> None:
    if split not in EVAL_SPLITS:
        raise UsageError(f"unknown evaluation split '{split}'; valid: {', '.join(EVAL_SPLITS)}")


def score_run(model: MultimodalVAE, spec, dataset, split: str, data: torch.Tensor, eval_config: EvalConfig, device,
              out: Path, training: dict) -> dict:
    """Score a trained model with its data set's evaluator (which also draws the run's picture) and the
    metrics plugins added to it, write metrics.json and return the metrics."""
    scores = get_evaluator(spec.name).score(model, dataset, data, split, eval_config, device, out)
    for metric in added_metrics(spec.name):
        scores.setdefault(metric.section, {})[metric.name] = float(metric.compute(model, dataset, data, eval_config,
                                                                                  device))
    metrics = {"model": model.name, "dataset": spec.name, "capacity": model.capacity, "beta": model.config.beta,
               **scores,
               "eval": dataclasses.asdict(eval_config), "training": training}
    write_json(out / METRICS_FILE, metrics)
    return metrics


def load_run(run_dir: Path, device_name: str = "auto") -> tuple[MultimodalVAE, object, object, dict, torch.device]:
    """Rebuild the model of a finished run from its config and checkpoint (clear errors when damaged)."""
    run_dir = require_run_dir(run_dir)
    device = resolve_device(device_name)
    config = read_json_object(run_dir / CONFIG_FILE)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE, device)
    metrics = read_json_object(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else None
    check_one_run(run_dir, config, metrics, checkpoint)
    try:
        spec = get_benchmark(config["dataset"])
        dataset = spec.make(**config["dataset_config"])
        model_config = dict(config["model_config"])
        model_config.pop("n_modalities"), model_config.pop("modality_dim")
        model = model_for_data(config["model"], model_config, spec, dataset)
        model.load_state_dict(checkpoint["model_state"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise UsageError(f"run {run_dir} does not match its checkpoint or config: {type(err).__name__}: {err}") from None
    return model.to(device).eval(), spec, dataset, config, device


def evaluate_run(run_dir: Path, overrides: dict | None = None, device_name: str = "auto",
                 split: str | None = None) -> dict:
    """Recompute the metrics of a finished run from its checkpoint (its splits are regenerated from the
    run's seed); the run's own evaluation settings and split apply unless ``overrides`` or ``split`` change them."""
    run_dir = Path(run_dir)
    if split is not None:
        check_split(split)
    model, spec, dataset, config, device = load_run(run_dir, device_name)
    try:
        eval_config = EvalConfig(**{**config["eval"], **(overrides or {})})
    except (KeyError, TypeError) as err:
        raise UsageError(f"run {run_dir} has no valid evaluation settings: {err}") from None
    if not (run_dir / METRICS_FILE).exists():
        raise UsageError(f"{run_dir} is not a finished run (no {METRICS_FILE}): train it again")
    require_writable(run_dir)  # before scoring, whose figures go into the run
    previous = read_json_object(run_dir / METRICS_FILE).get("training", {})
    split = split or previous.get("eval_split", "test")
    with run_lock(run_dir):
        return score_run(model, spec, dataset, split, dataset.splits()[split], eval_config, device, run_dir,
                         {**previous, "eval_split": split})


def export_samples(run_dir: Path, n: int, out_file: Path, seed: int = 0, device_name: str = "auto") -> dict[str, tuple]:
    """Write n unconditional and, per modality k, n conditional samples given k (test tuples cycled)
    to an .npz with keys ``unconditional`` and ``conditional_given_<k>``, each (n, M, F)."""
    from mrfbench.evaluate import generate_conditional, generate_unconditional

    if n < 1:
        raise UsageError(f"--n must be >= 1, got {n}")
    model, _, dataset, _, device = load_run(run_dir, device_name)
    torch.manual_seed(seed)
    test = dataset.splits()["test"]
    arrays = {"unconditional": generate_unconditional(model, n, device, 100_000)}
    n_per = math.ceil(n / len(test))
    for k in range(dataset.n_modalities):
        cond = generate_conditional(model, test, [k], n_per, device, 100_000)
        arrays[f"conditional_given_{k}"] = cond.transpose(1, 0, 2, 3).reshape(-1, *cond.shape[2:])[:n]
    out_file = Path(out_file)
    try:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out_file, lambda handle: np.savez(handle, **arrays))
    except OSError as err:
        raise UsageError(f"cannot write {out_file}: {err.strerror or err}") from None
    return {key: value.shape for key, value in arrays.items()}
