"""A sweep's settings (``sweep.json``) and the checks they pass before Ray starts."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrfbench.datasets import get_benchmark
from mrfbench.errors import UsageError, first_line
from mrfbench.spaces import SearchSpace, load_space, parse_space

SAMPLERS = ("tpe", "random", "grid")  # grid: each grid point of the space once, on seed 0
TRIAL_LAYOUT = 2  # how a trial's Tune config is laid out (2: TrialSpec under "trial", searched values beside it)
SWEEP_FILE = "sweep.json"
MAX_TRIALS = 10_000  # a sweep planning more is refused: Tune would spend minutes listing them before the first
CHECKPOINT_EVERY_S = 300.0  # an interrupted trial resumes from its last training state, at most this old


@dataclass
class SweepSettings:
    out: str
    name: str | None = None  # names its studies, Ray job and MLflow experiment: its folder's name when it started
    space: str | None = None  # None: the default data set's default space
    space_text: str | None = None  # its YAML, as read when the sweep started (None: a sweep older than this)
    models: list[str] = field(default_factory=list)  # empty: every model of the space
    added_models: list[list[str]] = field(default_factory=list)  # models added to a started sweep, by addition
    trials: int = 20  # searched configs per model
    seeds: int | None = None  # None: the space's
    epochs: int | None = None  # None: the space's
    grid: bool = False
    sampler: str = "tpe"
    asha: bool = False
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int | None = None
    address: str | None = None
    storage: str | None = None  # Optuna storage URL; default sqlite in the sweep directory
    dashboard: bool = False
    device: str = "auto"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    eval_options: dict[str, Any] = field(default_factory=dict)
    search_eval_options: dict[str, Any] | None = None  # None: the data set's (its spec)
    checkpoint_every_s: float = CHECKPOINT_EVERY_S  # a trial saves its training state at most this often
    packs: bool | None = None  # each final config's seeds as one pack (one Tune trial), a search packs; None: with GPUs
    pack_size: int | None = None  # a search's Optuna trials asked at a time (None: by device, plan.search_pack_size)
    mlflow: str | None = None  # an MLflow tracking URI every finished trial is logged to
    score_every: int | None = None  # each trial scores its weights every N epochs too: a learning curve per run
    layout: int = TRIAL_LAYOUT

    def __post_init__(self):
        if self.space is None:
            from mrfbench.datasets import DEFAULT_DATASET

            self.space = get_benchmark(DEFAULT_DATASET).default_space

    @property
    def packing(self) -> bool:
        """Whether runs train as packs: asked for (unasked: where trials have GPUs; on CPUs a pack trains slower
        than its runs one after another, README "Packed training"), and no learning curve (a curve scores one
        run at a time)."""
        wanted = self.packs if self.packs is not None else self.gpus_per_trial > 0
        return wanted and self.score_every is None

    def storage_url(self) -> str:
        """The Optuna storage: --storage, else the SQLite file ``optuna.db`` in the sweep folder."""
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'optuna.db'}"

    def model_groups(self, space: SearchSpace) -> list[list[str]]:
        """The models the sweep started with (every model of the space when none were named), then each set
        added later."""
        return [list(self.models or space.params), *self.added_models]

    def validate(self, space: SearchSpace) -> None:
        if not self.checkpoint_every_s >= 0:
            raise UsageError(f"--checkpoint-every must be >= 0 seconds, got {self.checkpoint_every_s}")
        models = list(itertools.chain(*self.model_groups(space)))
        unknown = [m for m in models if m not in space.params]
        if unknown:
            raise UsageError(f"model(s) {', '.join(unknown)} not in search space {space.name}; "
                             f"it has {', '.join(space.params)}")
        if self.trials < 1:
            raise UsageError(f"--trials must be >= 1, got {self.trials}")
        if self.seeds is not None and self.seeds < 1:
            raise UsageError(f"--seeds must be >= 1, got {self.seeds}")
        if self.epochs is not None and self.epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {self.epochs}")
        if self.pack_size is not None and self.pack_size < 1:
            raise UsageError(f"--pack-size must be >= 1, got {self.pack_size}")
        if self.score_every is not None and self.score_every < 1:
            raise UsageError(f"--score-every must be >= 1, got {self.score_every}")
        if self.pack_size is not None and self.pack_size > 1 and (self.asha or not self.packing):
            raise UsageError(f"--pack-size {self.pack_size} packs search trials, which "
                             + ("ASHA stops one at a time: leave out --asha or --pack-size" if self.asha
                                else "--no-packs does not: leave out one of them" if self.packs is False
                                else "a sweep on CPUs does not unless asked: add --packs" if self.packs is None
                                else "a learning curve (--score-every) scores one run at a time: leave out one of them"))
        if self.sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler '{self.sampler}'; valid: {', '.join(SAMPLERS)}")
        from mrfbench.sweeps.plan import plan

        planned = sum(stage.trials for stage in plan(self, space))
        if planned > MAX_TRIALS:
            raise UsageError(f"this sweep plans {planned:,} trials, more than the {MAX_TRIALS:,} one sweep runs; narrow "
                             "its grid or split it into several sweeps")
        if not 0 < self.cpus_per_trial < math.inf or not 0 <= self.gpus_per_trial < math.inf:
            raise UsageError(f"--cpus-per-trial must be a number > 0 and --gpus-per-trial one >= 0, got "
                             f"{self.cpus_per_trial:g} and {self.gpus_per_trial:g}")
        if self.address is None:  # trials run here: their device must exist here (a cluster's may differ)
            from mrfbench.training import resolve_device

            resolve_device(self.device)
        else:
            check_address(self.address)
        check_storage(self.storage_url(), given=self.storage is not None)
        if self.mlflow is not None:
            from mrfbench.tracking import check_uri

            check_uri(self.mlflow)
        from mrfbench.evaluate import EvalConfig

        EvalConfig(**{**self.eval_options, **(self.search_eval_options or {})})  # a bad size fails here, not in a trial
        EvalConfig(**self.eval_options)
        get_benchmark(space.dataset).check_options(self.dataset_options)


WHERE_AND_WHAT_JOINED = ("out", "name", "added_models", "layout")  # where a sweep lives, its name, models added
# since, its layout


def differing_settings(recorded: SweepSettings, given: dict, exact: bool = False) -> list[str]:
    """The settings among ``given`` whose values are not ``recorded``'s. A space counts by its YAML where
    both have it, not by the name or path it was given by; dataset and scoring options count key by key
    (all of them with ``exact``)."""
    differ = []
    for name, value in given.items():
        mine = getattr(recorded, name)
        if name in WHERE_AND_WHAT_JOINED or (name == "space" and None not in (recorded.space_text, given.get("space_text"))):
            continue
        if name == "space_text":
            differ += ["search space"] if None not in (mine, value) and value != mine else []
            continue
        if name in ("dataset_options", "eval_options"):
            keys = set(value) | (set(mine) if exact else set())
            differ += sorted(key.replace("_", "-") for key in keys if mine.get(key) != value.get(key))
        elif value != mine:
            differ.append(name.replace("_", "-"))
    return differ


def sweep_space(space: str, text: str | None) -> SearchSpace:
    """A sweep's space: the YAML it recorded when it started (so the sweep reads the same space from any
    folder, whatever became of the file since), else the space by its name or path."""
    if text is not None and not isinstance(text, str):
        raise UsageError(f"corrupt {SWEEP_FILE}: its space_text is not YAML text")
    return parse_space(text, space) if text is not None else load_space(space)


def recorded_settings(out: Path) -> SweepSettings:
    """The settings ``out/sweep.json`` holds, with ``out`` as the sweep's folder (a moved or copied sweep
    continues where it is)."""
    path = out / SWEEP_FILE
    if not path.exists():
        raise UsageError(f"{out} is not a sweep directory (no {SWEEP_FILE}); nothing to resume")
    try:
        raw = json.loads(path.read_text())
        recorded = {"layout": 1, "packs": False, "name": Path(str(raw.get("out", out))).name, **raw}  # older sweeps
        return SweepSettings(**{**recorded, "out": str(out)})  # lack the first three
    except (json.JSONDecodeError, TypeError) as err:
        raise UsageError(f"corrupt {path}: {err}") from None


def check_address(address: str, timeout: float = 5.0) -> None:
    """A Ray address host:port must answer before Ray is asked to join it (ray.init would wait forever)."""
    import socket

    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--address must be auto or host:port, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise UsageError(f"no Ray cluster answers at {address} ({err.strerror or err}); start one with "
                         "`ray start --head` or leave --address out for a local one") from None


def check_storage(url: str, given: bool = True) -> None:
    """An Optuna storage must be a database URL (sqlite:///path, postgresql://...) whose driver is installed;
    a SQLite file's folder must exist (the default's, ``given`` False, is made with the sweep) and a file
    already there must be a database."""
    import sqlite3

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"--storage must be a database URL such as sqlite:///path/optuna.db, got '{url}'") from None
    try:
        create_engine(parsed).dispose()  # loads the dialect and its driver; connects to nothing
    except (ImportError, NoSuchModuleError) as err:
        raise UsageError(f"--storage {parsed.render_as_string(hide_password=True)}: its database driver is not "
                         f"installed ({first_line(err)}): install it (PostgreSQL: pip install 'psycopg[binary]')") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if given and not path.parent.is_dir():
        raise UsageError(f"--storage {url}: the folder {path.parent} does not exist")
    if path.exists():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                db.execute("SELECT name FROM sqlite_master").fetchall()
        except sqlite3.Error as err:
            raise UsageError(f"the Optuna storage {path} cannot be read ({err}); restore it from a copy, or start the "
                             "sweep again in another --out") from None
