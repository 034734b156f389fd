"""Commands on one run: train, evaluate, sample."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mrfbench.cli.common import (
    Device,
    InceptionWeights,
    Mlflow,
    NImageTuples,
    RunDir,
    Threads,
    app,
    clean_errors,
    console,
    eval_config,
    parse_set_values,
    print_pack_outcomes,
    print_results,
    refuse_inside_results,
    set_threads,
)
from mrfbench.errors import UsageError


def _in(panel: str, help: str = "", *names: str):
    """An option shown in ``panel`` of `train --help`."""
    return typer.Option(*names, help=help, rich_help_panel=panel)


MODEL, TRAINING, DATA, EVALUATION = "Model", "Training", "Data", "Evaluation"


PACKED = "comma-separated values train as one pack, each into OUT/<setting>=<value>_..."


@app.command("train")
@clean_errors
def train_command(
    out: Annotated[Path, typer.Option(help="run directory to write (a pack: the folder of its members' runs)")],
    model: Annotated[str, _in(MODEL, "model name (see `mrfbench models`)")] = "gmrf",
    beta: Annotated[str | None, _in(MODEL, f"KL weight, > 0; {PACKED} \\[1.0]")] = None,
    set_options: Annotated[list[str] | None, _in(
        MODEL, "a model option as KEY=VALUE, repeatable (e.g. --set latent_dim=8 --set dist=laplace); "
        "`mrfbench models --options` lists each model's", "--set")] = None,
    dataset: Annotated[str | None, _in(DATA, "data set name (see `mrfbench datasets`) \\[the default one]")] = None,
    n_train: Annotated[int | None, _in(DATA, "training tuples \\[the data set's]")] = None,
    n_val: Annotated[int | None, _in(DATA, "validation tuples \\[5,000]")] = None,
    n_test: Annotated[int | None, _in(DATA, "test tuples \\[the data set's]")] = None,
    data_dir: Annotated[Path | None, _in(DATA, "image data: the build of `mrfbench data` \\[the cache]")] = None,
    epochs: Annotated[int, _in(TRAINING, "training epochs")] = 200,
    lr: Annotated[str, _in(TRAINING, f"Adam learning rate; {PACKED}")] = "1e-3",
    lr_schedule: Annotated[str, _in(TRAINING, f"constant or cosine; {PACKED}")] = "cosine",
    batch_size: Annotated[int, _in(TRAINING)] = 256,
    kl_warmup: Annotated[str, _in(TRAINING, f"fraction of training over which beta ramps up from 0; {PACKED}")] = "0.1",
    precision: Annotated[str, _in(TRAINING, "fp32, or bf16: bfloat16 autocast (image data)")] = "fp32",
    pack_size: Annotated[int | None, _in(TRAINING, "most members trained as one pack (a larger product is split) "
                                                   "\\[as many as the device's memory holds, or one by one where "
                                                   "a timed pack steps slower than its members alone]")] = None,
    seed: Annotated[str, typer.Option(help=f"seed of data, initialisation, shuffling and evaluation; {PACKED}")] = "0",
    n_unconditional: Annotated[int, _in(EVALUATION, "unconditional samples scored")] = 1_000_000,
    n_per_tuple: Annotated[int, _in(EVALUATION, "conditional generations per test tuple")] = 20,
    n_image_tuples: Annotated[int | None, _in(EVALUATION, "image data: test tuples scored \\[10,000]")] = None,
    inception_weights: Annotated[str | None, _in(EVALUATION, "image data: the standard Inception weights "
                                                 "(pt_inception-2015-12-05) for the paper's FID")] = None,
    eval_split: Annotated[str, _in(EVALUATION, "split the conditional figures are scored on: test, or val for "
                                               "a search run")] = "test",
    score_every: Annotated[int | None, _in(EVALUATION, "score the weights every N epochs too, on at most 2,000 "
                                                      "image tuples or 100,000 samples: a learning curve "
                                                      "(learning_curve.csv and .png, TensorBoard); one run only")] = None,
    device: Device = "auto",
    threads: Threads = None,
    mlflow: Mlflow = None,
    overwrite: Annotated[bool, typer.Option(help="replace a finished run in --out (a pack: retrain its finished "
                                                 "members too)")] = False,
):
    """Train a model, keep its best checkpoint, score it and write a pair plot into OUT; with several values
    of --seed, --beta, --lr, --lr-schedule or --kl-warmup, train their product as one pack of runs."""
    from mrfbench.datasets import DEFAULT_DATASET
    from mrfbench.pack_runs import member_grid, parse_values
    from mrfbench.training import TrainConfig

    set_threads(threads)
    refuse_inside_results(out, "--out", may_be="run")
    if pack_size is not None and pack_size < 1:
        raise UsageError(f"--pack-size must be >= 1, got {pack_size}")
    if score_every is not None and score_every < 1:
        raise UsageError(f"--score-every must be >= 1, got {score_every}")
    if mlflow is not None:
        from mrfbench.tracking import check_uri

        check_uri(mlflow)
    dataset = dataset or DEFAULT_DATASET
    options = parse_set_values(set_options or [])
    if "beta" in options and beta is not None:
        raise UsageError("beta is given twice (--beta and --set beta=); give it once")
    betas = options.pop("beta", None) or parse_values(beta or "1.0", float, "--beta")
    options = {"beta": betas, **options}
    several = sorted(key for key, values in options.items() if len(values) > 1 and key != "beta")
    if several:
        raise UsageError(f"--set {several[0]} has several values; a pack's members share every model option but beta "
                         f"(the others shape its tensors or code): run one pack per value of {several[0]}")
    grid = member_grid({**options, "lr": parse_values(lr, float, "--lr"),
                        "lr_schedule": parse_values(lr_schedule, str, "--lr-schedule"),
                        "kl_warmup": parse_values(kl_warmup, float, "--kl-warmup"),
                        "seed": parse_values(seed, int, "--seed")})
    training = ("lr", "lr_schedule", "kl_warmup", "seed")

    def member(point: dict, folder: Path):
        from mrfbench.pack_runs import PackMember

        train_config = TrainConfig(epochs=epochs, batch_size=batch_size, device=device, precision=precision,
                                   **{key: point[key] for key in training})
        data_options = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": point["seed"],
                        "build_dir": None if data_dir is None else str(data_dir)}
        return PackMember(folder, {k: v for k, v in point.items() if k not in training}, train_config,
                          eval_config(n_unconditional=n_unconditional, n_per_tuple=n_per_tuple, seed=point["seed"],
                                      n_image_tuples=n_image_tuples, inception_weights=inception_weights),
                          {k: v for k, v in data_options.items() if v is not None})

    members = [member(point, out / name if len(grid) > 1 else out) for name, point in grid]
    if len(members) > 1 and score_every is not None:
        raise UsageError("--score-every scores one run; train the pack's members one at a time to score them so")
    if len(members) == 1:
        finished = [_train_single(model, dataset, members[0], overwrite, eval_split, score_every)]
    else:
        finished = _train_packs(model, dataset, members, overwrite, eval_split, pack_size)
    if mlflow is not None:
        from mrfbench.tracking import log_run

        for run_dir in finished:
            log_run(mlflow, f"mrfbench train {dataset}", run_dir, str(run_dir))
        console.print(f"logged {len(finished)} run(s) to MLflow at {mlflow} (experiment 'mrfbench train {dataset}')")


def _epoch_progress(title: str, epochs: int):
    """A progress display of ``epochs`` epochs (a line per tenth of them when output is not a terminal) and
    its update function (epoch, status)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    progress = Progress(*columns, console=console, disable=not console.is_terminal)
    task = progress.add_task(title, total=epochs, status="")

    def update(epoch: int, status: str) -> None:
        if epoch == epochs:
            status += "; scoring the best checkpoint"
        progress.update(task, completed=epoch, status=status)
        if not console.is_terminal and (epoch == 1 or epoch % max(1, epochs // 10) == 0 or epoch == epochs):
            console.print(f"epoch {epoch}/{epochs}: {status}")

    return progress, update


def _train_single(model: str, dataset: str, member, overwrite: bool, eval_split: str, score_every: int | None) -> Path:
    """One run, continued where it stopped if an earlier `train` of it was interrupted; returns its folder."""
    from mrfbench.curve import CURVE_PREFIX
    from mrfbench.experiment import run_experiment
    from mrfbench.resume import state_file
    from mrfbench.runs import CURVES_PREFIX

    out, epochs = member.out, member.train.epochs
    if state_file(out).exists() and not overwrite:
        console.print(f"continuing the interrupted run of {out} from its saved state ({state_file(out).name})")
    progress, update = _epoch_progress(f"train {model}", epochs)

    def status(record: dict) -> str:
        scored = [f"{k[len(CURVE_PREFIX):]} {v:.3g}" for k, v in record.items() if k.startswith(CURVE_PREFIX)]
        return "; ".join([f"loss {record['train_loss']:.3f} val {record['val_loss']:.3f}", *scored])

    with progress:
        metrics = run_experiment(
            model, dataset, out, model_options=member.model_options, dataset_options=member.dataset_options,
            train_config=member.train, eval_config=member.eval, overwrite=overwrite, eval_split=eval_split, curves=True,
            on_epoch=lambda _model, epoch, record, _snapshot: update(epoch, status(record)),
            resumable=True, score_every=score_every)
    print_results(metrics)
    files = ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith((".", CURVES_PREFIX))))
    console.print(f"wrote {out}/ ({files}, TensorBoard curves: `tensorboard --logdir {out}`); "
                  f"trained in {metrics['training']['wall_time_s']:.0f} s")
    return out


def _train_packs(model: str, dataset: str, members: list, overwrite: bool, eval_split: str,
                 pack_size: int | None) -> list[Path]:
    """Train ``members`` as packs of at most ``pack_size`` (None: as many as fit and pay, ``pack_size``);
    finished members are kept unless ``overwrite``. Returns the folders of the members trained now."""
    from mrfbench.pack_runs import planned_packs, run_pack

    packs, why = planned_packs(model, dataset, members, overwrite, pack_size)
    todo = sum(len(pack) for pack in packs)
    if todo < len(members):
        console.print(f"{len(members) - todo} of {len(members)} members already finished in {members[0].out.parent}; "
                      f"training the other {todo} (--overwrite retrains them all)")
    if not packs:
        return []
    console.print(why + (f"; {len(packs)} packs" if len(packs) > 1 else ""))
    outcomes = []
    for number, pack in enumerate(packs, 1):
        title = f"train {model} x {len(pack)}" + (f" (pack {number} of {len(packs)})" if len(packs) > 1 else "")
        progress, update = _epoch_progress(title, pack[0].train.epochs)

        def on_epoch(epoch: int, records: list) -> None:
            alive = [r for r in records if r is not None]
            status = (f"mean loss {sum(r['train_loss'] for r in alive) / len(alive):.3f} "
                      f"val {sum(r['val_loss'] for r in alive) / len(alive):.3f}" if alive else "")
            failed = len(records) - len(alive)
            update(epoch, status + (f"; {failed} failed" if failed else ""))

        with progress:
            outcomes += run_pack(model, dataset, pack, overwrite, eval_split, curves=True, on_epoch=on_epoch)
    print_pack_outcomes(outcomes)
    failed = [o for o in outcomes if o.failure]
    console.print(f"wrote {len(outcomes) - len(failed)} runs into {members[0].out.parent}/ "
                  f"(`mrfbench leaderboard {members[0].out.parent}` compares them)")
    if failed:
        raise typer.Exit(1)
    return [o.out for o in outcomes]


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

    refuse_inside_results(out, "--out")
    shapes = export_samples(run_dir, n, out, seed, device)
    for key, shape in shapes.items():
        console.print(f"{key}: {shape}")
    console.print(f"wrote {out}")
