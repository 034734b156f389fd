"""What every command shares: the app, the consoles, option types, the error guard and small helpers."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from mrfbench.errors import ERROR_LOG_PREFIX, SweepInterrupted, UsageError, first_line

# click's exception base, as this typer has it (its own copy of click since typer 0.20)
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """The app's commands, whose usage errors (a value that does not parse, an unknown option, a missing
    argument) are one line on stderr, as every other bad input is, with the exit code 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as err:
            where = f" (`{err.ctx.command_path} --help`)" if getattr(err, "ctx", None) else ""
            err_console.print(escape(f"error: {first_line(err.format_message())}{where}"), highlight=False,
                              soft_wrap=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            err_console.print("Aborted!")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(help="Train, sample and score multimodal VAEs (MRF MVAE family and baselines).",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=OneLineErrors)
console = Console()
err_console = Console(stderr=True)


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

    cores = len(os.sched_getaffinity(0))
    if threads is not None and not 1 <= threads <= cores:
        raise UsageError(f"--threads must be between 1 and the {cores} cores this process may use, got {threads}")
    torch.set_num_threads(threads or cores)
RunDir = Annotated[Path, typer.Argument(help="a directory written by `mrfbench train`")]
Publish = Annotated[Path | None, typer.Option(
    help="also write the reference leaderboard into PUBLISH/<dataset>/ (the committed ones are in results/) "
         "\\[only the sweep's own leaderboard]")]
Mlflow = Annotated[str | None, typer.Option(
    help="also log each finished run to this MLflow tracking URI, e.g. sqlite:///mlflow.db (a file here; "
         "`mlflow ui --backend-store-uri sqlite:///mlflow.db` shows it) or http://host:5000")]
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
            err_console.print(f"[bold red]numerical failure:[/] {escape(first_line(err))}; files already written are kept",
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


def _holder(folder: Path) -> str | None:
    """What ``folder`` is, where it is a run's or a sweep's: "run", "sweep", else None."""
    from mrfbench.runs import CHECKPOINT_FILE, CONFIG_FILE, is_finished_run
    from mrfbench.sweeps import SWEEP_FILE

    if (folder / SWEEP_FILE).is_file():
        return "sweep"
    if is_finished_run(folder) or ((folder / CONFIG_FILE).is_file() and (folder / CHECKPOINT_FILE).is_file()):
        return "run"
    return None


def refuse_inside_results(target: Path, flag: str, may_be: str | None = None) -> None:
    """An output given as ``flag`` must lie outside every run's and sweep's folder, which hold their own files
    only; ``target`` itself may be a ``may_be`` ("run" for `train --overwrite`, "sweep" for a resumed one)."""
    target = Path(target).resolve()
    for folder in (target, *target.parents):
        kind = _holder(folder)
        if kind is None or (folder == target and kind == may_be):
            continue
        where = f"is a {kind}'s folder" if folder == target else f"lies inside the {kind} in {folder}"
        raise UsageError(f"{flag} {target} {where}, which holds only its own files; write it elsewhere")


def print_results(metrics: dict) -> None:
    """A run's figures as its data set's evaluator lays them out, the paper's beside them."""
    from mrfbench.evaluators import get_evaluator
    from mrfbench.evaluators.figures import figure_table
    from mrfbench.paper import paper_figures

    evaluator = get_evaluator(metrics["dataset"])
    console.print(figure_table(evaluator, metrics, paper_figures(metrics["dataset"], metrics["model"])))
    for table in evaluator.details(metrics) if evaluator.details else []:
        console.print(table)


def eval_config(**options):
    from mrfbench.evaluate import EvalConfig

    return EvalConfig(**{k: v for k, v in options.items() if v is not None})


def _key_value(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set takes KEY=VALUE, got '{pair}'")
    return key.strip().replace("-", "_"), value


def parse_set_values(pairs: list[str]) -> dict[str, list]:
    """KEY=VALUE[,VALUE...] pairs: each key's YAML-typed values, in order (a YAML list or mapping is one value)."""
    import yaml

    from mrfbench.spaces import load_yaml

    options = {}
    for key, value in map(_key_value, pairs):
        parts = [value] if value.strip().startswith(("[", "{")) else value.split(",")
        try:
            options[key] = [load_yaml(part) for part in parts]
        except yaml.YAMLError:
            raise UsageError(f"--set {key}: cannot read '{value}' as one or more comma-separated values") from None
    return options


def print_pack_outcomes(outcomes: list) -> None:
    """One line per member of a pack: its folder and headline figures, or why it failed."""
    from mrfbench.evaluators import get_evaluator, run_figures

    for outcome in outcomes:
        if outcome.failure:
            console.print(f"[red]failed[/] {outcome.out.name}: {escape(outcome.failure)}", highlight=False)
            continue
        metrics = outcome.metrics
        flat = run_figures(metrics, metrics["dataset"])
        figures = ", ".join(f"{key} {flat[key]:.4g}" for key in get_evaluator(metrics["dataset"]).score_parts)
        console.print(f"{outcome.out.name}: best epoch {metrics['training']['best_epoch']}, "
                      f"val loss {metrics['training']['best_val_loss']:.4g}; {figures}", highlight=False)
