"""Commands on one run: train, evaluate, sample."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mrfbench.cli.common import (
    Device,
    InceptionWeights,
    NImageTuples,
    RunDir,
    Threads,
    app,
    clean_errors,
    console,
    eval_config,
    parse_set,
    print_results,
    set_threads,
)


def _in(panel: str, help: str = "", *names: str):
    """An option shown in ``panel`` of `train --help`."""
    return typer.Option(*names, help=help, rich_help_panel=panel)


MODEL, TRAINING, DATA, EVALUATION = "Model", "Training", "Data", "Evaluation"


@app.command("train")
@clean_errors
def train_command(
    out: Annotated[Path, typer.Option(help="run directory to write")],
    model: Annotated[str, _in(MODEL, "model name (see `mrfbench models`)")] = "gmrf",
    beta: Annotated[float, _in(MODEL, "KL weight, > 0")] = 1.0,
    set_options: Annotated[list[str] | None, _in(
        MODEL, "a model option as KEY=VALUE, repeatable (e.g. --set latent_dim=8 --set dist=laplace); "
        "`mrfbench models --options` lists each model's", "--set")] = None,
    dataset: Annotated[str | None, _in(DATA, "data set name (see `mrfbench datasets`) \\[the default one]")] = None,
    n_train: Annotated[int | None, _in(DATA, "training tuples \\[the data set's]")] = None,
    n_val: Annotated[int | None, _in(DATA, "validation tuples \\[5,000]")] = None,
    n_test: Annotated[int | None, _in(DATA, "test tuples \\[the data set's]")] = None,
    data_dir: Annotated[Path | None, _in(DATA, "image data: the build of `mrfbench data` \\[the cache]")] = None,
    epochs: Annotated[int, _in(TRAINING, "training epochs")] = 200,
    lr: Annotated[float, _in(TRAINING, "Adam learning rate")] = 1e-3,
    lr_schedule: Annotated[str, _in(TRAINING, "constant or cosine")] = "cosine",
    batch_size: Annotated[int, _in(TRAINING)] = 256,
    kl_warmup: Annotated[float, _in(TRAINING, "fraction of training over which beta ramps up from 0")] = 0.1,
    precision: Annotated[str, _in(TRAINING, "fp32, or bf16: bfloat16 autocast (image data)")] = "fp32",
    seed: Annotated[int, typer.Option(help="seed of data, initialisation, shuffling and evaluation")] = 0,
    n_unconditional: Annotated[int, _in(EVALUATION, "unconditional samples scored")] = 1_000_000,
    n_per_tuple: Annotated[int, _in(EVALUATION, "conditional generations per test tuple")] = 20,
    n_image_tuples: Annotated[int | None, _in(EVALUATION, "image data: test tuples scored \\[10,000]")] = None,
    inception_weights: Annotated[str | None, _in(EVALUATION, "image data: the standard Inception weights "
                                                 "(pt_inception-2015-12-05) for the paper's FID")] = None,
    eval_split: Annotated[str, _in(EVALUATION, "split the conditional figures are scored on: test, or val for "
                                               "a search run")] = "test",
    device: Device = "auto",
    threads: Threads = None,
    overwrite: Annotated[bool, typer.Option(help="replace a finished run in --out")] = False,
):
    """Train a model, keep its best checkpoint, score it and write a pair plot into OUT."""
    from mrfbench.datasets import DEFAULT_DATASET
    from mrfbench.experiment import run_experiment
    from mrfbench.runs import CURVES_PREFIX
    from mrfbench.train import TrainConfig

    set_threads(threads)
    dataset = dataset or DEFAULT_DATASET
    options = {"beta": beta} | parse_set(set_options or [])
    train_config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, seed=seed,
                               device=device, kl_warmup=kl_warmup, precision=precision)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task(f"train {model}", total=epochs, status="")

        def on_epoch(_model, epoch: int, record: dict, _snapshot) -> None:
            status = f"loss {record['train_loss']:.3f} val {record['val_loss']:.3f}"
            if epoch == epochs:
                status += "; scoring the best checkpoint"
            progress.update(task, completed=epoch, status=status)
            if not console.is_terminal and (epoch == 1 or epoch % max(1, epochs // 10) == 0 or epoch == epochs):
                console.print(f"epoch {epoch}/{epochs}: {status}")

        metrics = run_experiment(
            model, dataset, out, model_options=options,
            dataset_options={k: v for k, v in {"n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed,
                                               "build_dir": None if data_dir is None else str(data_dir)}.items()
                             if v is not None},
            train_config=train_config,
            eval_config=eval_config(n_unconditional=n_unconditional, n_per_tuple=n_per_tuple, seed=seed,
                                     n_image_tuples=n_image_tuples, inception_weights=inception_weights),
            overwrite=overwrite, on_epoch=on_epoch, eval_split=eval_split, curves=True,
        )
    print_results(metrics)
    files = ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith((".", CURVES_PREFIX))))
    console.print(f"wrote {out}/ ({files}, TensorBoard curves: `tensorboard --logdir {out}`); "
                  f"trained in {metrics['training']['wall_time_s']:.0f} s")


@app.command()
@clean_errors
def evaluate(
    run_dir: RunDir,
    n_unconditional: Annotated[int | None, typer.Option(help="unconditional samples scored \\[default: the run's]")] = None,
    n_per_tuple: Annotated[int | None, typer.Option(help="generations per test tuple \\[default: the run's]")] = None,
    seed: Annotated[int | None, typer.Option(help="evaluation seed \\[default: the run's]")] = None,
    n_image_tuples: NImageTuples = None,
    inception_weights: InceptionWeights = None,
    split: Annotated[str | None, typer.Option(help="test or val \\[default: the run's]")] = None,
    device: Device = "auto",
    threads: Threads = None,
):
    """Recompute a run's metrics from its checkpoint (rewrites metrics.json and the pair plot or grid)."""
    from mrfbench.experiment import evaluate_run

    set_threads(threads)
    overrides = {"n_unconditional": n_unconditional, "n_per_tuple": n_per_tuple, "seed": seed,
                 "n_image_tuples": n_image_tuples, "inception_weights": inception_weights}
    print_results(evaluate_run(run_dir, {k: v for k, v in overrides.items() if v is not None}, device, split))


@app.command()
@clean_errors
def sample(
    run_dir: RunDir,
    out: Annotated[Path, typer.Option(help=".npz file to write")],
    n: Annotated[int, typer.Option(help="samples per key")] = 10_000,
    seed: Annotated[int, typer.Option()] = 0,
    device: Device = "auto",
):
    """Export unconditional and conditional samples: keys `unconditional`, `conditional_given_<k>`."""
    from mrfbench.experiment import export_samples

    shapes = export_samples(run_dir, n, out, seed, device)
    for key, shape in shapes.items():
        console.print(f"{key}: {shape}")
    console.print(f"wrote {out}")
