"""Sweeps: Ray Tune runs the trials, Optuna searches the space; every finished config is re-run over seeds.

A sweep directory holds ``sweep.json`` (its settings, so ``--resume`` needs nothing else), ``optuna.db``
(the Optuna studies, open it with optuna-dashboard), one Ray Tune experiment per searched model
(``search-<model>``), then one, ``final``, for every model's best config (or the grid) x seeds, so all
models share the cluster. Each trial's directory holds ``trial.json`` (model, stage, seed, parameters,
node, status and error; a search trial that ASHA stopped early has status "stopped" and the epoch it
reached) beside the run itself (``run/``: config, metrics, checkpoint, plot). With ``packs`` (the default)
the final stage trains each config's seeds as one pack (``mrfbench.pack``) in one Tune trial, whose folder
holds a ``seed<N>/`` per member laid out as a trial's (``trial.json`` and ``run/``); a pack interrupted
midway reruns only its members without a finished ``trial.json``. Every few minutes a trial
saves its training state as Tune's checkpoint (``checkpoint_*/``, the last one kept): an interrupted sweep,
resumed, continues each unfinished trial from its last state rather than from its first epoch.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrfbench.datasets import get_benchmark
from mrfbench.errors import SweepInterrupted, UsageError
from mrfbench.runs import atomic_write, read_json_object, write_json
from mrfbench.spaces import TRAIN_KEYS, SearchSpace, load_space

SAMPLERS = ("tpe", "random", "grid")  # grid: each grid point of the space once, on seed 0
TRIAL_LAYOUT = 2  # how a trial's Tune config is laid out (2: TrialSpec under "trial", searched values beside it)
SWEEP_FILE = "sweep.json"
TRIAL_FILE = "trial.json"
PACK_MEMBER = "seed*"  # the member folders of a pack trial: seed0, seed1, ...


CHECKPOINT_EVERY_S = 300.0  # an interrupted trial resumes from its last training state, at most this old
STATE_FILE = "training_state.pt"


@dataclass
class SweepSettings:
    out: str
    space: str | None = None  # None: the default data set's default space
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
    packs: bool = True  # the final stage trains each config's seeds as one pack (one Tune trial)
    layout: int = TRIAL_LAYOUT

    def __post_init__(self):
        if self.space is None:
            from mrfbench.datasets import DEFAULT_DATASET

            self.space = get_benchmark(DEFAULT_DATASET).default_space

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
        if self.sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler '{self.sampler}'; valid: {', '.join(SAMPLERS)}")
        if self.sampler == "grid":
            for model in models:
                space.grid(model)  # a clear error for ranges, which a grid cannot enumerate
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise UsageError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        if self.address is None:  # trials run here: their device must exist here (a cluster's may differ)
            from mrfbench.train import resolve_device

            resolve_device(self.device)
        else:
            check_address(self.address)
        if self.storage is not None:
            check_storage(self.storage)
        from mrfbench.evaluate import EvalConfig

        EvalConfig(**{**self.eval_options, **(self.search_eval_options or {})})  # a bad size fails here, not in a trial
        EvalConfig(**self.eval_options)
        get_benchmark(space.dataset).check_options(self.dataset_options)


def recorded_settings(out: Path) -> SweepSettings:
    """The settings ``out/sweep.json`` holds, with ``out`` as the sweep's folder (a moved or copied sweep
    continues where it is)."""
    path = out / SWEEP_FILE
    if not path.exists():
        raise UsageError(f"{out} is not a sweep directory (no {SWEEP_FILE}); nothing to resume")
    try:
        raw = json.loads(path.read_text())
        return SweepSettings(**{"layout": 1, "packs": False, **raw, "out": str(out)})  # older sweeps lack the first two
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


def check_storage(url: str) -> None:
    """An Optuna storage must be a database URL (sqlite:///path, postgresql://...)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise UsageError(f"--storage must be a database URL such as sqlite:///path/optuna.db, got '{url}'") from None


BOOKKEEPING = ("training", "eval", "collapse", "sampler")  # metrics sections that hold no figure of the table


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flat_section(section: dict, name: str) -> dict[str, float]:
    """'<name>/<key>' for each number of a metrics section; a nested group G gives '<name>/G_<key>', and the
    noise floors and ceilings of a section or group '<name>/floor_<key>', '<name>/floor_G_<key>'."""
    flat = {}
    for key, value in section.items():
        if _number(value):
            flat[f"{name}/{key}"] = float(value)
        elif isinstance(value, dict):
            for inner, number in value.items():
                if _number(number):
                    flat[f"{name}/{key}_{inner}"] = float(number)
                elif isinstance(number, dict) and inner in ("floor", "ceiling"):
                    flat.update({f"{name}/{inner}_{key}_{k}": float(v) for k, v in number.items() if _number(v)})
    return flat


def flatten_metrics(metrics: dict, spec) -> dict[str, float]:
    """The scalar figures a trial reports: '<section>/<metric>' for every number of every section of the
    metrics (their floors and ceilings included), ``collapsed``, ``collapse_unreadable`` (a block whose KL
    is not finite), the training time, and ``score`` (what a sweep minimises; see ``Benchmark.score``)."""
    flat = {}
    for name, section in metrics.items():
        if isinstance(section, dict) and name not in BOOKKEEPING:
            flat.update(_flat_section(section, name))
    flat["collapsed"] = float(metrics["collapse"]["collapsed"])
    kl = metrics["collapse"].get("kl_per_block", [])
    flat["collapse_unreadable"] = float(any(v is None or not math.isfinite(v) for v in kl))
    flat["train_wall_time_s"] = float(metrics["training"]["wall_time_s"])
    flat["score"] = spec.score(flat)
    return flat


@dataclass(frozen=True)
class TrialSpec:
    """What one trial runs: a model with its fixed parameters on a data set, at a stage and seed. A trial's
    Tune config is ``{"trial": <TrialSpec as a dict>, <searched parameter>: <value>, ...}``, so the Optuna
    study names each searched parameter plainly (beta, lr, ...)."""

    model: str
    stage: str  # "search" (validation split, ASHA's per-epoch reports) or "final" (test split)
    seed: int
    params: dict[str, Any]
    dataset: str
    epochs: int
    device: str
    cpus: float
    dataset_options: dict[str, Any]
    eval_options: dict[str, Any]
    checkpoint_every_s: float = CHECKPOINT_EVERY_S
    pack_seeds: tuple[int, ...] = ()  # a final-stage pack: these seeds trained as one (``seed`` is the first)

    @classmethod
    def of(cls, config: dict) -> tuple[TrialSpec, dict[str, Any]]:
        """The spec of a Tune config and the trial's parameters (fixed, then searched)."""
        spec = cls(**config["trial"])
        return spec, {**spec.params, **{k: v for k, v in config.items() if k != "trial"}}


def run_trial(config: dict) -> None:
    """Ray Tune trainable: one training run; a failure (NaN, non-PD covariance, OOM, ...) is recorded in
    trial.json with its reason and reported with score NaN, so the sweep goes on."""
    import torch
    from ray import tune

    from mrfbench.allocator import reuse_freed_memory
    from mrfbench.evaluate import EvalConfig
    from mrfbench.experiment import run_experiment
    from mrfbench.train import TrainConfig

    spec, params = TrialSpec.of(config)
    torch.set_num_threads(max(1, int(spec.cpus)))
    reuse_freed_memory()
    trial_dir = Path(tune.get_context().get_trial_dir())
    if spec.pack_seeds:
        from mrfbench.sweep_packs import run_pack_trial

        tune.report(run_pack_trial(spec, params, trial_dir))
        return
    resume = _saved_state(tune.get_checkpoint())
    record = {"model": spec.model, "stage": spec.stage, "seed": spec.seed, "params": params, "epochs": spec.epochs,
              **placement(), "status": "running", "started": _now(),
              **({"resumed_after_epoch": resume["epoch"]} if resume else {})}
    write_json(trial_dir / TRIAL_FILE, record)
    train_params = {k: v for k, v in params.items() if k in TRAIN_KEYS}
    model_params = {k: v for k, v in params.items() if k not in TRAIN_KEYS}
    try:
        metrics = run_experiment(
            spec.model, spec.dataset, trial_dir / "run", model_options=model_params,
            dataset_options={**spec.dataset_options, "seed": spec.seed},
            train_config=TrainConfig(epochs=spec.epochs, seed=spec.seed, device=spec.device, **train_params),
            eval_config=EvalConfig(seed=spec.seed, **spec.eval_options),
            overwrite=True, eval_split="val" if spec.stage == "search" else "test",
            on_epoch=_epoch_reporter(spec.dataset, spec.stage == "search", spec.checkpoint_every_s),
            resume=resume,
        )
        result = flatten_metrics(metrics, get_benchmark(spec.dataset))
        record.update(status="ok", metrics=result)
    except Exception as err:  # noqa: BLE001 - any failure is the trial's outcome, recorded with its reason
        result = {"score": math.nan, "failed": 1.0}
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
    write_json(trial_dir / TRIAL_FILE, {**record, "finished": _now()})
    tune.report(result)


def placement() -> dict:
    """Where a trial runs: its Ray node, its torch threads and the GPUs Ray gave it (CUDA_VISIBLE_DEVICES)."""
    import ray
    import torch

    return {"node_id": ray.get_runtime_context().get_node_id(), "threads": torch.get_num_threads(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _now() -> str:
    import datetime

    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


RESULTS_FILE = "results.csv"


def mark_stopped(trial_dir: Path, last_result: dict) -> None:
    """Record a trial Tune has completed while its ``trial.json`` still says running (the scheduler stopped it
    before it was scored) as stopped, with the epoch it reached."""
    path = Path(trial_dir) / TRIAL_FILE
    if not path.is_file():
        return
    record = read_json_object(path)
    if record.get("status") == "running":
        write_json(path, {**record, "status": "stopped", "stopped_epoch": last_result.get("training_iteration"),
                          "finished": _now()})


def write_results_table(sweep_dir: Path) -> Path:
    """``results.csv`` in the sweep directory: one row per trial (folder, model, stage, seed, status, error,
    epochs, start and end, each parameter as ``param_<name>``, each figure), written atomically."""
    import pandas as pd

    rows = []
    trials = [*Path(sweep_dir).glob(f"*/*/{TRIAL_FILE}"), *Path(sweep_dir).glob(f"*/*/{PACK_MEMBER}/{TRIAL_FILE}")]
    for path in sorted(trials):
        record = read_json_object(path)
        folder = path.parent.relative_to(sweep_dir)
        rows.append({"trial": "/".join(folder.parts[1:]), "path": str(folder),
                     **{k: record.get(k) for k in ("model", "stage", "seed", "status", "error", "epochs",
                                                   "stopped_epoch", "started", "finished")},
                     **{f"param_{k}": v for k, v in record.get("params", {}).items()}, **(record.get("metrics") or {})})
    path = Path(sweep_dir) / RESULTS_FILE
    atomic_write(path, lambda h: h.write(pd.DataFrame(rows).to_csv(index=False).encode()))
    return path


def trial_name(config: dict) -> str:
    """A trial as people read it: model, stage, seed and its searched parameters."""
    spec, params = TrialSpec.of(config)
    searched = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in params.items() if k not in spec.params)
    seeds = f"seeds {seed_span(spec.pack_seeds)}" if spec.pack_seeds else f"seed {spec.seed}"
    return f"{spec.model} {spec.stage} {seeds}" + (f" {searched}" if searched else "")


def seed_span(seeds) -> str:
    """Seeds as people write them: "0-2", or "0,3" when not consecutive."""
    seeds = list(seeds)
    consecutive = len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1))
    return f"{seeds[0]}-{seeds[-1]}" if consecutive else ",".join(map(str, seeds))


def named_trainable():
    """``run_trial`` as a Tune trainable whose actors the Ray dashboard lists by ``trial_name``."""
    from ray.tune.trainable.function_trainable import wrap_function

    class MrfbenchTrial(wrap_function(run_trial)):
        def __repr__(self):
            return trial_name(self.config) if "trial" in getattr(self, "config", {}) else "mrfbench trial"

    return MrfbenchTrial


def _epoch_reporter(dataset: str, with_proxy: bool, checkpoint_every_s: float):
    """Reports each epoch's losses to Tune (TensorBoard and progress.csv get curves) and, ``with_proxy``
    where the data set's evaluator has a per-epoch ``proxy``, it as ``score`` (what ASHA and Optuna read),
    drawn from a forked random state so that the trial trains exactly as ``mrfbench train`` would; at most
    every ``checkpoint_every_s`` seconds, with the training state as Tune's checkpoint of the trial (one
    kept), which a resumed sweep continues from."""
    import tempfile
    import time

    import torch
    from ray import tune

    proxy = get_benchmark(dataset).get_evaluator().proxy if with_proxy else None
    saved = time.monotonic()

    def report(model, epoch: int, record: dict, snapshot) -> None:
        nonlocal saved
        losses = {key: value for key, value in record.items() if key != "epoch"}
        if proxy is not None:
            device = next(model.parameters()).device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                losses["score"] = proxy(model)
        if time.monotonic() - saved < checkpoint_every_s:
            tune.report(losses)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(snapshot(), Path(folder) / STATE_FILE)
            tune.report(losses, checkpoint=tune.Checkpoint.from_directory(folder))  # copied before it returns
        saved = time.monotonic()

    return report


def _saved_state(checkpoint) -> dict | None:
    """The training state of a trial's last Tune checkpoint (None for a fresh trial)."""
    import torch

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)


def _trial(settings: SweepSettings, space: SearchSpace, stage: str, model: str, params: dict, seed: int,
           pack_seeds: tuple[int, ...] = ()) -> dict:
    """A TrialSpec, as the dict Tune carries."""
    return dataclasses.asdict(TrialSpec(
        model=model, stage=stage, seed=seed, params=dict(params), dataset=space.dataset,
        epochs=settings.epochs or space.epochs, device=settings.device, cpus=settings.cpus_per_trial,
        dataset_options=settings.dataset_options,
        eval_options={**settings.eval_options, **(search_scoring(settings, space) if stage == "search" else {})},
        checkpoint_every_s=settings.checkpoint_every_s, pack_seeds=tuple(pack_seeds)))


def search_scoring(settings: SweepSettings, space: SearchSpace) -> dict[str, Any]:
    """The scoring options of search-stage trials: the sweep's, else its data set's."""
    if settings.search_eval_options is not None:
        return settings.search_eval_options
    return get_benchmark(space.dataset).search_eval_options


class Sweep:
    """Runs (or resumes) the search and final stages of a sweep with Ray Tune and Optuna."""

    def __init__(self, settings: SweepSettings):
        self.settings = settings
        self.space = load_space(settings.space)
        settings.validate(self.space)
        if settings.asha and get_benchmark(self.space.dataset).get_evaluator().proxy is None:
            raise UsageError(f"--asha needs a per-epoch score, which the {self.space.dataset} data set's evaluator "
                             f"does not have (space {self.space.name})")
        self.out = Path(settings.out).resolve()
        self.models = list(itertools.chain(*settings.model_groups(self.space)))
        self.seeds = settings.seeds or self.space.seeds

    @classmethod
    def start(cls, settings: SweepSettings) -> Sweep:
        """A new sweep into ``settings.out``; a folder that already holds a sweep is resumed when its settings
        are these, and refused otherwise (it is left as it is)."""
        if (Path(settings.out) / SWEEP_FILE).exists():
            recorded = recorded_settings(Path(settings.out))
            mine = {"out": None, "added_models": None}  # where it lives, and models added to it since
            same = {**dataclasses.asdict(recorded), **mine} == {**dataclasses.asdict(settings), **mine}
            if not same:
                raise UsageError(f"{settings.out} already holds another sweep ({SWEEP_FILE}); continue it with --resume "
                                 "(or the same command), or choose another --out")
            return cls.resume(Path(settings.out))
        return cls(settings)

    @classmethod
    def resume(cls, out: Path, add_models: list[str] | None = None) -> Sweep:
        """The sweep in ``out`` with its saved settings; ``add_models`` it does not have yet join it as a final
        experiment of their own (searched first, unless the sweep is a grid), so nothing finished is re-run.
        The sweep continues in ``out`` as given, wherever it was started."""
        settings = recorded_settings(Path(out))
        if settings.layout != TRIAL_LAYOUT:
            raise UsageError(f"{out} was started by an older mrfbench (trial layout {settings.layout}, this one "
                             f"reads {TRIAL_LAYOUT}); resume it with that version, or start a new sweep")
        sweep = cls(settings)
        added = list(dict.fromkeys(m for m in add_models or [] if m not in sweep.models))
        if not added:
            return sweep
        settings.added_models = [*settings.added_models, added]
        return cls(settings)

    def final_experiments(self) -> list[tuple[str, list[str]]]:
        """The final stage's Tune experiments and their models: 'final' for those the sweep started with,
        'final-<a>-<b>' for each set added later."""
        started, *added = self.settings.model_groups(self.space)
        return [("final", started), *((f"final-{'-'.join(models)}", models) for models in added)]

    @property
    def packed(self) -> bool:
        """Whether the final stage trains each config's seeds as one pack (one Tune trial)."""
        return self.settings.packs and self.seeds > 1

    def planned_trials(self) -> int:
        """Tune trials the sweep runs in all (search trials plus final seeds or packs, or grid x seeds or packs)."""
        final = 1 if self.packed else self.seeds
        if self.settings.grid:
            return sum(len(self.space.grid(m)) for m in self.models) * final
        return sum(self._search_trials(m) + final for m in self.models)

    def _search_trials(self, model: str) -> int:
        """Search-stage trials of a model: --trials, or its grid size with the grid sampler."""
        if not self.space.searched(model):
            return 0
        return len(self.space.grid(model)) if self.settings.sampler == "grid" else self.settings.trials

    def connect(self) -> str | None:
        """Write the sweep's settings and join (or start) Ray; returns the dashboard's URL when it has one."""
        import ray

        try:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / SWEEP_FILE, dataclasses.asdict(self.settings))
        except OSError as err:
            raise UsageError(f"cannot write the sweep directory {self.out}: {err.strerror or err}") from None
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # epochs of a data set without a per-epoch proxy report their losses but no score
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        if not ray.is_initialized():
            context = ray.init(address=self.settings.address, include_dashboard=self.settings.dashboard,
                               log_to_driver=False, configure_logging=False, namespace=f"mrfbench-{self.out.name}")
            url = getattr(context, "dashboard_url", None)
            self.dashboard_url = f"http://{url}" if url else None
        return getattr(self, "dashboard_url", None)

    def run(self, callbacks: list | None = None) -> None:
        """Run every stage of every model; finished trials are never repeated on a resumed sweep. The results
        table (``results.csv``) is rewritten as each trial finishes."""
        from mrfbench.progress import ResultsTable

        callbacks = [*(callbacks or []), ResultsTable(self.out)]
        self.connect()
        for name, models in self.final_experiments():
            if self.settings.grid:
                jobs = interleave({model: self.space.grid(model) for model in models})
            else:
                best = {model: self._search(model, callbacks) for model in models}
                jobs = [(model, params) for model, params in best.items() if params is not None]
            self._final(name, jobs, callbacks)
        self._record_final_study()

    def _storage(self):
        import optuna

        return optuna.storages.RDBStorage(self.settings.storage or f"sqlite:///{self.out / 'optuna.db'}")

    def _record_final_study(self) -> None:
        """The final stage (seeds, or the --grid) as an Optuna study of its own, '<sweep>-final': each trial's
        model and parameters, its score, and its seed and figures as user attributes (written anew, so a
        resumed sweep records each trial once)."""
        import optuna

        records = [r for r in results_records(self.out) if r.get("stage") == "final"]
        if not records:
            return
        storage, name = self._storage(), f"{self.out.name}-final"
        if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
            optuna.delete_study(study_name=name, storage=storage)
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
        params = [{"model": r["model"], **r["params"]} for r in records]
        choices: dict[str, list] = {}
        for trial_params in params:
            for key, value in trial_params.items():
                choices.setdefault(key, [])
                if value not in choices[key]:
                    choices[key].append(value)
        for record, trial_params in zip(records, params):
            score = (record.get("metrics") or {}).get("score")
            ok = record.get("status") == "ok" and isinstance(score, float) and math.isfinite(score)
            figures = {k: v for k, v in (record.get("metrics") or {}).items() if "/" in k}
            study.add_trial(optuna.trial.create_trial(
                params=trial_params, value=score if ok else None,
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
                distributions={k: optuna.distributions.CategoricalDistribution(choices[k]) for k in trial_params},
                user_attrs={**figures, "seed": record["seed"], "stage": "final", "error": record.get("error", "")}))

    def _trainable(self):
        from ray import tune

        return tune.with_resources(named_trainable(), {"cpu": self.settings.cpus_per_trial,
                                                       "gpu": self.settings.gpus_per_trial})

    def _tuner(self, name: str, param_space: dict, tune_config, callbacks):
        from ray import tune

        path = self.out / name
        if tune.Tuner.can_restore(path):
            return tune.Tuner.restore(str(path), self._trainable(), resume_unfinished=True, resume_errored=True)
        run_config = tune.RunConfig(name=name, storage_path=str(self.out), verbose=0, callbacks=callbacks,
                                    failure_config=tune.FailureConfig(max_failures=0),
                                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
        return tune.Tuner(self._trainable(), param_space=param_space, tune_config=tune_config, run_config=run_config)

    def _search(self, model: str, callbacks) -> dict | None:
        """Optuna search over the model's space (seed 0, validation scores); returns the best parameters."""
        import optuna
        from ray import tune

        searched, fixed = self.space.searched(model), self.space.fixed(model)
        if not searched:
            return fixed
        n_trials = self._search_trials(model)
        sampler = {"tpe": lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=max(1, n_trials // 2)),
                   "random": lambda: optuna.samplers.RandomSampler(seed=0),
                   "grid": lambda: optuna.samplers.GridSampler(
                       {k: list(p.values) for k, p in searched.items()}, seed=0)}[self.settings.sampler]()
        storage = self._storage()
        from mrfbench.optuna_search import RecordingOptunaSearch

        start = self.space.start.get(model)
        search = RecordingOptunaSearch(space={k: p.optuna_distribution() for k, p in searched.items()},
                                       points_to_evaluate=[start] if start else None, metric="score", mode="min",
                                       sampler=sampler, storage=storage, study_name=f"{self.out.name}-{model}")
        config = {"trial": _trial(self.settings, self.space, "search", model, fixed, seed=0)}
        tune_config = tune.TuneConfig(
            trial_dirname_creator=trial_dirname, search_alg=search, num_samples=n_trials,
            max_concurrent_trials=self.settings.max_concurrent_trials,
            scheduler=self._asha() if self.settings.asha else None)
        fit_all(self._tuner(f"search-{model}", config, tune_config, callbacks), n_trials, self.out)
        return best_params(results_records(self.out / f"search-{model}"), fixed)

    def _asha(self):
        """ASHA over epochs: each epoch is one report, the final scoring one more, so max_t is epochs + 1
        (ASHA's default of 100 would stop every longer trial before it is scored). The first rung is a quarter
        of training: earlier, the proxy favours fast starters (high rates) over what ends best."""
        from ray.tune.schedulers import ASHAScheduler

        epochs = self.settings.epochs or self.space.epochs
        return ASHAScheduler(metric="score", mode="min", max_t=epochs + 1, grace_period=max(1, epochs // 4))

    def _final(self, name: str, jobs: list[tuple[str, dict]], callbacks) -> None:
        """Every (model, config) job x seeds 0..N-1 in one Tune experiment ``name``, so all models share the
        cluster; scored on the test split. Packed, a job's seeds are one trial."""
        from ray import tune

        if not jobs:
            return
        if self.packed:
            trials = [_trial(self.settings, self.space, "final", model, params, 0, tuple(range(self.seeds)))
                      for model, params in jobs]
        else:
            trials = [_trial(self.settings, self.space, "final", model, params, seed)
                      for seed in range(self.seeds) for model, params in jobs]
        config = {"trial": tune.grid_search(trials)}
        tune_config = tune.TuneConfig(max_concurrent_trials=self.settings.max_concurrent_trials,
                                      trial_dirname_creator=trial_dirname)
        fit_all(self._tuner(name, config, tune_config, callbacks), len(trials), self.out)


def fit_all(tuner, planned: int, sweep_dir: Path) -> None:
    """Run a Tune experiment and bring the sweep's results table up to date; a stage that ends before its
    ``planned`` trials are done (Tune returns normally on Ctrl-C) stops the sweep instead of going on to the
    next stage with a partial one."""
    done = 0
    for result in tuner.fit():
        if result.metrics and result.metrics.get("done"):
            done += 1
            mark_stopped(Path(result.path), result.metrics)
    write_results_table(sweep_dir)
    if done < planned:
        raise SweepInterrupted(f"{done} of {planned} trials of this stage finished; continue with --resume")


def interleave(grids: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    """(model, params) jobs taking each model's i-th grid point in turn, so a sweep stopped early (or still
    running) has covered every model, at the first values of each grid, rather than the first models."""
    depth = max((len(grid) for grid in grids.values()), default=0)
    return [(model, grid[i]) for i in range(depth) for model, grid in grids.items() if i < len(grid)]


def trial_dirname(trial) -> str:
    """Short, readable, unique trial directory names: model, stage, seed and Tune's id (Ray's default spells
    out the whole config)."""
    spec = trial.config.get("trial", {})
    if spec.get("pack_seeds"):
        seeds = "seeds" + seed_span(spec["pack_seeds"]).replace(",", "_")
    else:
        seeds = f"seed{spec.get('seed', '')}"
    return f"{spec.get('model', 'trial')}_{spec.get('stage', '')}_{seeds}_{trial.trial_id}"


def results_records(directory: Path) -> list[dict]:
    """Every trial.json below ``directory``."""
    return [read_json_object(p) for p in sorted(Path(directory).glob(f"**/{TRIAL_FILE}"))]


def best_params(records: list[dict], fixed: dict) -> dict | None:
    """Parameters of the finished trial with the lowest score (None if every trial failed)."""
    done = [r for r in records if r.get("status") == "ok" and isinstance(r["metrics"].get("score"), (int, float))
            and math.isfinite(r["metrics"]["score"])]
    if not done:
        return None
    return {**fixed, **min(done, key=lambda r: r["metrics"]["score"])["params"]}
