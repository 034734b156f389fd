"""Learning curves: a run's table figures, scored on its current weights every few epochs of training."""

from __future__ import annotations

import csv
import dataclasses
import tempfile
from pathlib import Path

import torch

from mrfbench.evaluate import EvalConfig
from mrfbench.evaluators import get_evaluator
from mrfbench.runs import CURVE_CSV, CURVE_PLOT, LOSS_PLOT
from mrfbench.training import forked_rng

CURVE_PREFIX = "curve/"  # the figures of an epoch's history record that the curve scored
CURVE_SAMPLES = {"n_unconditional": 100_000, "n_joint": 20_000, "n_tau": 5_000, "n_image_tuples": 2_000}


def curve_config(eval_config: EvalConfig) -> EvalConfig:
    """The run's evaluation settings with at most ``CURVE_SAMPLES`` samples: a point of the curve costs a
    fraction of the final scoring (image data: the first 2,000 tuples of the split, the same at every point)."""
    return dataclasses.replace(eval_config, **{k: min(v, getattr(eval_config, k)) for k, v in CURVE_SAMPLES.items()})


def curve_point(model, spec, dataset, data: torch.Tensor, split: str, eval_config: EvalConfig,
                device: torch.device) -> dict[str, float]:
    """The figures of ``spec``'s table (a column's fallback where its own figure is missing, e.g. fid_suite
    for an FID without Inception weights) and those beyond it for ``model`` as it is now, as 'curve/<key>'. The
    training's random streams are left as they were, so a run with a curve trains as one without."""
    with forked_rng(device), tempfile.TemporaryDirectory() as picture_dir:
        scores = get_evaluator(spec.name).score(model, dataset, data, split, curve_config(eval_config), device,
                                                Path(picture_dir))
    model.train()
    return {CURVE_PREFIX + key: value for key, value in table_figures(scores, spec.name).items()}


def table_figures(scores: dict, dataset: str) -> dict[str, float]:
    """The figures of data set ``dataset``'s table in ``scores`` (its evaluator's sections), a column's
    fallback where its own figure is missing, and those beyond the table, by key."""
    evaluator = get_evaluator(dataset)
    flat = evaluator.figures(scores)
    keys = [c.key if c.key in flat else c.fallback for c in evaluator.paper + evaluator.beyond_columns]
    return {key: flat[key] for key in keys if key in flat}


def write_loss_plot(out: Path, history: list[dict]) -> None:
    """The training and validation losses against the epoch (``curves.png``)."""
    from mrfbench.plots import learning_curve_plot

    learning_curve_plot({"run": [{k: r[k] for k in ("epoch", "train_loss", "val_loss") if k in r} for r in history]},
                        out / LOSS_PLOT)


def write_curve(out: Path, history: list[dict]) -> bool:
    """The scored epochs of ``history`` as ``learning_curve.csv`` and a plot of each figure against the epoch
    (``learning_curve.png``); False where no epoch was scored."""
    rows = [{"epoch": r["epoch"], **{k[len(CURVE_PREFIX):]: v for k, v in r.items() if k.startswith(CURVE_PREFIX)}}
            for r in history if any(k.startswith(CURVE_PREFIX) for k in r)]
    if not rows:
        return False
    with open(out / CURVE_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from mrfbench.plots import learning_curve_plot

    learning_curve_plot({"run": rows}, out / CURVE_PLOT)
    return True


SWEEP_CURVES_CSV, SWEEP_CURVES_PLOT = "learning_curves.csv", "learning_curves.png"  # beside a leaderboard


def sweep_curves(directory: Path) -> list[dict]:
    """The learning curve of every finished run below ``directory`` (a sweep, or a folder of runs): a row per
    scored epoch, with the run's folder, model, seed and beta before the figures."""
    from mrfbench.runs import CONFIG_FILE, is_finished_run, is_staging, read_json_object

    rows = []
    for path in sorted(Path(directory).glob(f"**/{CURVE_CSV}")):
        run = path.parent
        if is_staging(run) or not is_finished_run(run):
            continue
        config = read_json_object(run / CONFIG_FILE)
        about = {"run": str(run.relative_to(directory)), "model": config.get("model"),
                 "seed": (config.get("train") or {}).get("seed"), "beta": (config.get("model_config") or {}).get("beta")}
        with open(path, newline="") as handle:
            rows += [{**about, "epoch": int(r.pop("epoch")), **{k: float(v) if v else float("nan") for k, v in r.items()}}
                     for r in csv.DictReader(handle)]
    return rows


def write_sweep_curves(rows: list[dict], out: Path) -> None:
    """``rows`` (``sweep_curves``) as ``learning_curves.csv`` and a panel per figure, a line per run, in ``out``."""
    import io

    from mrfbench.plots import learning_curve_plot
    from mrfbench.runs import atomic_write

    fields = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / SWEEP_CURVES_CSV, lambda handle: handle.write(text.getvalue().encode()))
    series: dict[str, list[dict]] = {}
    for r in rows:
        name = f"{r['model']} seed {r['seed']} beta {r['beta']:g}"
        series.setdefault(name, []).append({k: v for k, v in r.items() if k not in ("run", "model", "seed", "beta")})
    learning_curve_plot(series, out / SWEEP_CURVES_PLOT)
