"""Runs a sweep's plan through Ray Tune and Optuna: the search stages (Optuna suggestions as Tune trials),
then the final stages (each config over the seeds, a pack per config), resumable stage by stage."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import os
import shutil
from pathlib import Path
from typing import Any

from mrfbench.datasets import get_benchmark
from mrfbench.errors import SweepInterrupted, UsageError, first_line
from mrfbench.evaluators import get_evaluator
from mrfbench.runs import write_json
from mrfbench.spaces import SearchSpace, load_space
from mrfbench.sweeps.cluster import check_resources, check_shared_folder
from mrfbench.sweeps.plan import Job, Stage, final_jobs, interleave, longest_first, packs_seeds, plan
from mrfbench.sweeps.records import best_params, mark_stopped, results_records, write_results_table
from mrfbench.sweeps.settings import (
    SWEEP_FILE,
    TRIAL_LAYOUT,
    SweepSettings,
    differing_settings,
    recorded_settings,
    sweep_space,
)
from mrfbench.sweeps.studies import record_final_study
from mrfbench.sweeps.trial import TrialSpec, named_trainable, trial_dirname

WRITER_LOCK = ".writer.lock"  # in the sweep folder, held by the one process running the sweep


SWEEP_LOGS = {"optuna": "optuna.log", "ray.tune": "tune.log"}  # Optuna's and Tune's messages, by logger: kept
# off the terminal's progress display (the display reports each trial's outcome and reason itself)


def _log_chatter_to(folder: Path) -> None:
    """Send Optuna's and Tune's logs to their files in ``folder`` instead of stderr (once per file)."""
    import logging

    import optuna

    optuna.logging.disable_default_handler()
    for name, file in SWEEP_LOGS.items():
        logger = logging.getLogger(name)
        logger.propagate = False
        if not any(getattr(h, "baseFilename", None) == str(folder / file) for h in logger.handlers):
            logger.addHandler(logging.FileHandler(folder / file))


def _trial(settings: SweepSettings, space: SearchSpace, stage: str, model: str, params: dict, seed: int,
           pack_seeds: tuple[int, ...] = ()) -> dict:
    """A TrialSpec, as the dict Tune carries."""
    return dataclasses.asdict(TrialSpec(
        model=model, stage=stage, seed=seed, params=dict(params), dataset=space.dataset,
        epochs=settings.epochs or space.epochs, device=settings.device, cpus=settings.cpus_per_trial,
        dataset_options=settings.dataset_options,
        eval_options={**settings.eval_options, **(search_scoring(settings, space) if stage == "search" else {})},
        checkpoint_every_s=settings.checkpoint_every_s, pack_seeds=tuple(pack_seeds), score_every=settings.score_every))


def search_scoring(settings: SweepSettings, space: SearchSpace) -> dict[str, Any]:
    """The scoring options of search-stage trials: the sweep's, else its data set's."""
    if settings.search_eval_options is not None:
        return settings.search_eval_options
    return get_benchmark(space.dataset).search_eval_options


class Sweep:
    """Runs (or resumes) the search and final stages of a sweep with Ray Tune and Optuna."""

    def __init__(self, settings: SweepSettings):
        self.settings = settings
        self.space = sweep_space(settings.space, settings.space_text)
        settings.space_text = self.space.text
        settings.validate(self.space)
        if settings.asha and get_evaluator(self.space.dataset).proxy is None:
            raise UsageError(f"--asha needs a per-epoch score, which the {self.space.dataset} data set's evaluator "
                             f"does not have (space {self.space.name})")
        self.out = Path(settings.out).resolve()
        settings.name = settings.name or self.out.name
        self.models = list(itertools.chain(*settings.model_groups(self.space)))
        self.seeds = settings.seeds or self.space.seeds

    @classmethod
    def start(cls, settings: SweepSettings) -> Sweep:
        """A new sweep into ``settings.out``; a folder that already holds a sweep is resumed when its settings
        are these, and refused otherwise (it is left as it is)."""
        if (Path(settings.out) / SWEEP_FILE).exists():
            if settings.space_text is None:
                settings.space_text = load_space(settings.space).text
            differ = differing_settings(recorded_settings(Path(settings.out)), dataclasses.asdict(settings), exact=True)
            if differ:
                raise UsageError(f"{settings.out} already holds another sweep (its {', '.join(differ)} differ); "
                                 "continue it with --resume, or choose another --out")
            return cls.resume(Path(settings.out))
        return cls(settings)

    @classmethod
    def resume(cls, out: Path, add_models: list[str] | None = None, given: dict | None = None) -> Sweep:
        """The sweep in ``out`` with its saved settings; ``add_models`` it does not have yet join it as a final
        experiment of their own (searched first, unless the sweep is a grid), so nothing finished is re-run.
        The sweep continues in ``out`` as given, wherever it was started. ``given`` settings (a space by
        name or path among them) must be the recorded ones: a sweep continues only as it was started."""
        settings = recorded_settings(Path(out))
        if settings.layout != TRIAL_LAYOUT:
            raise UsageError(f"{out} was started by an older mrfbench (trial layout {settings.layout}, this one "
                             f"reads {TRIAL_LAYOUT}); resume it with that version, or start a new sweep")
        if given and given.get("space") is not None:
            given = {**given, "space_text": load_space(given["space"]).text}
        differ = differing_settings(settings, given or {})
        if differ:
            raise UsageError(f"the sweep in {out} was started with another {', '.join(differ)}; it continues only as "
                             "it was started: leave them out, or start a new sweep in another --out")
        sweep = cls(settings)
        added = list(dict.fromkeys(m for m in add_models or [] if m not in sweep.models))
        if not added:
            return sweep
        settings.added_models = [*settings.added_models, added]
        return cls(settings)

    @contextlib.contextmanager
    def writing(self):
        """Hold the sweep folder for this process: a second writer (another `sweep` or `reproduce` on it) is
        refused in one line while this one runs. A folder this call made is removed again if the sweep never
        started in it (its settings refused before they were written)."""
        new = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            handle = open(self.out / WRITER_LOCK, "a")
        except OSError as err:
            raise UsageError(f"cannot write the sweep directory {self.out}: {err.strerror or err}") from None
        try:
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise UsageError(f"another mrfbench process is running the sweep in {self.out}; wait for it to "
                                     "end or stop it, then --resume") from None
                yield
        finally:
            if new and [p.name for p in self.out.iterdir()] == [WRITER_LOCK]:
                shutil.rmtree(self.out, ignore_errors=True)

    def plan(self) -> list[Stage]:
        return plan(self.settings, self.space)

    def final_experiments(self) -> list[tuple[str, list[str]]]:
        """The final stages' Tune experiments and their models: 'final' for those the sweep started with,
        'final-<a>-<b>' for each set added later."""
        return [(stage.name, list(stage.models)) for stage in self.plan() if stage.kind == "final"]

    def planned_runs(self) -> int:
        """Training runs the sweep makes in all (each member of a pack one)."""
        return sum(stage.runs for stage in self.plan())

    def connect(self) -> str | None:
        """Join (or start) Ray as a job named after the sweep (the dashboard's Jobs page lists it so), check
        that a trial fits its nodes, and write the sweep's settings; returns the dashboard's URL when it has one."""
        import ray
        from ray.job_config import JobConfig

        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # epochs of a data set without a per-epoch proxy report their losses but no score
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        # each trial keeps one checkpoint, so each of its saves snapshots the experiment: expected, not a warning
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        if not ray.is_initialized():
            try:
                context = ray.init(address=self.settings.address, include_dashboard=self.settings.dashboard,
                                   log_to_driver=False, configure_logging=False, namespace=f"mrfbench-{self.settings.name}",
                                   job_config=JobConfig(metadata={"job_name": f"mrfbench sweep {self.settings.name}",
                                                                  "sweep_folder": str(self.out)}))
            except ConnectionError as err:  # --address auto with no cluster on this machine
                raise UsageError(f"no Ray cluster to join at --address {self.settings.address} ({first_line(err)}); "
                                 "start one with `ray start --head`, or leave --address out for a local one") from None
            url = getattr(context, "dashboard_url", None)
            self.dashboard_url = f"http://{url}" if url else None
            if self.settings.address is None:  # the Ray this process started ends with it (even killed), and so
                # do Tune's copies of its trials
                from mrfbench.sweeps.reaper import staged_trials, start_reaper

                start_reaper(staged_trials())
        check_resources(self.settings.cpus_per_trial, self.settings.gpus_per_trial)
        created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.settings.address is not None:  # a cluster's other nodes must write into this folder
                check_shared_folder(self.out)
            write_json(self.out / SWEEP_FILE, {**dataclasses.asdict(self.settings), "out": "."})  # it is where it lies
        except UsageError:
            if created:
                self.out.rmdir()
            raise
        except OSError as err:
            raise UsageError(f"cannot write the sweep directory {self.out}: {err.strerror or err}") from None
        return getattr(self, "dashboard_url", None)

    def run(self, callbacks: list | None = None) -> None:
        """Run every stage of every model; finished trials are never repeated on a resumed sweep. The results
        table (``results.csv``) is rewritten as each trial finishes."""
        from mrfbench.progress import FinalStudy, ResultsTable

        callbacks = [*(callbacks or []), ResultsTable(self.out), FinalStudy(self.out, self._storage_url(),
                                                                             f"{self.settings.name}-final")]
        if self.settings.mlflow:
            from mrfbench.progress import MlflowTrials

            callbacks.append(MlflowTrials(self.settings.mlflow, f"mrfbench sweep {self.settings.name}"))
        self.connect()
        _log_chatter_to(self.out)
        best: dict[str, dict | None] = {}  # each searched model's best config (None: every trial failed)
        for stage in self.plan():
            if stage.kind == "search":
                best[stage.models[0]] = self._search(stage, callbacks)
                continue
            if stage.source == "grid":
                configs = interleave({model: self.space.grid(model) for model in stage.models})
            else:
                configs = [(m, best[m] if m in best else self.space.fixed(m)) for m in stage.models]
            configs = [(m, p) for m, p in configs if p is not None]
            jobs = final_jobs(longest_first(configs, self._job_costs(stage, configs)), self.seeds, self.settings.packing)
            self._final(stage, jobs, callbacks)
        self._record_final_study()

    def _job_costs(self, stage: Stage, configs: list[tuple[str, dict]]) -> dict[str, float]:
        """Each model's time per training tuple (its first config's), measured here where the stage's jobs
        outnumber the trials that run at once, more than one model shares it and it is not resumed (Tune
        keeps its order); else nothing (the order is moot)."""
        import ray
        from ray import tune

        firsts = {model: params for model, params in reversed(configs)}
        asked = {"CPU": self.settings.cpus_per_trial, "GPU": self.settings.gpus_per_trial}
        total = ray.cluster_resources()
        slots = min(int(total.get(kind, 0) // need) for kind, need in asked.items() if need > 0)
        jobs = len(configs) * (1 if packs_seeds(self.settings.packing, self.seeds) else self.seeds)
        if len(firsts) < 2 or jobs <= min(slots, self.settings.max_concurrent_trials or slots) \
                or tune.Tuner.can_restore(str(self.out / stage.name)):
            return {}
        from mrfbench.sweeps.costs import tuple_seconds

        costs, skipped = tuple_seconds(self.space.dataset, self.settings.dataset_options, firsts)
        if skipped:
            print(f"could not time {', '.join(skipped)}: started in the space's order", flush=True)
        return costs

    def _storage_url(self) -> str:
        return self.settings.storage_url()

    def _storage(self):
        import optuna

        return optuna.storages.RDBStorage(self._storage_url())

    def _record_final_study(self) -> None:
        record_final_study(self.out, self._storage_url(), f"{self.settings.name}-final")

    def _trainable(self):
        from ray import tune

        return tune.with_resources(named_trainable(), {"cpu": self.settings.cpus_per_trial,
                                                       "gpu": self.settings.gpus_per_trial})

    def _tuner(self, name: str, param_space: dict, tune_config, callbacks):
        from ray import tune

        path = self.out / name
        if tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(str(path), self._trainable(), resume_unfinished=True, resume_errored=True)
            _run_with(tuner, tune_config.search_alg, callbacks)
            return tuner
        run_config = tune.RunConfig(name=name, storage_path=str(self.out), verbose=0, callbacks=callbacks,
                                    failure_config=tune.FailureConfig(max_failures=0),
                                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
        return tune.Tuner(self._trainable(), param_space=param_space, tune_config=tune_config, run_config=run_config)

    def _search(self, stage: Stage, callbacks) -> dict | None:
        """Optuna search over the stage's model's space (seed 0, validation scores), its suggestions trained
        one per Tune trial, or asked ``stage.pack_size`` at a time and trained as packs; returns the best
        parameters."""
        import optuna
        from ray import tune

        from mrfbench.optuna_search import PackedOptunaSearch, RecordingOptunaSearch, told_trials

        model, n_trials = stage.models[0], stage.trials
        searched, fixed = self.space.searched(model), self.space.fixed(model)
        sampler = {"tpe": lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=max(1, n_trials // 2),
                                                             constant_liar=stage.pack_size > 1),
                   "random": lambda: optuna.samplers.RandomSampler(seed=0),
                   "grid": lambda: optuna.samplers.GridSampler(
                       {k: list(p.values) for k, p in searched.items()}, seed=0)}[self.settings.sampler]()
        start = None if tune.Tuner.can_restore(self.out / stage.name) else self.space.start.get(model)
        space = {k: p.optuna_distribution() for k, p in searched.items()}
        study_name = f"{self.settings.name}-{model}"
        if stage.pack_size > 1:
            search = PackedOptunaSearch(space, fixed, n_trials, stage.pack_size, sampler, self._storage_url(),
                                        study_name, start)
        else:
            search = RecordingOptunaSearch(space=space, points_to_evaluate=[start] if start else None, metric="score",
                                           mode="min", sampler=sampler, storage=self._storage(), study_name=study_name)
        config = {"trial": _trial(self.settings, self.space, "search", model, fixed, seed=0)}
        tune_config = tune.TuneConfig(
            trial_dirname_creator=trial_dirname, search_alg=search, num_samples=n_trials,
            max_concurrent_trials=self.settings.max_concurrent_trials,
            scheduler=self._asha() if stage.asha else None)
        done = fit_all(self._tuner(stage.name, config, tune_config, callbacks), self.out)
        if stage.pack_size > 1:
            done = told_trials(optuna.load_study(study_name=study_name, storage=self._storage_url()))
        require_finished(done, n_trials)
        return best_params(results_records(self.out / stage.name), fixed)

    def _asha(self):
        """ASHA over epochs: each epoch is one report, the final scoring one more, so max_t is epochs + 1
        (ASHA's default of 100 would stop every longer trial before it is scored). The first rung is a quarter
        of training: earlier, the proxy favours fast starters (high rates) over what ends best."""
        from ray.tune.schedulers import ASHAScheduler

        epochs = self.settings.epochs or self.space.epochs
        return ASHAScheduler(metric="score", mode="min", max_t=epochs + 1, grace_period=max(1, epochs // 4))

    def _final(self, stage: Stage, jobs: list[Job], callbacks) -> None:
        """The stage's jobs in one Tune experiment, so all its models share the cluster; scored on the test
        split."""
        from ray import tune

        if not jobs:
            return
        trials = [_trial(self.settings, self.space, stage.kind, job.model, job.params, job.seeds[0],
                         job.seeds if job.packed else ()) for job in jobs]
        config = {"trial": tune.grid_search(trials)}
        tune_config = tune.TuneConfig(max_concurrent_trials=self.settings.max_concurrent_trials,
                                      trial_dirname_creator=trial_dirname)
        require_finished(fit_all(self._tuner(stage.name, config, tune_config, callbacks), self.out), len(trials))


def _run_with(tuner, search_alg, callbacks: list) -> None:
    """A restored Tune experiment goes on with this process's searcher and callbacks, which know where the
    sweep is now; Tune would restore those pickled when it began, bound to the folder it began in. The
    searcher then takes its state, never its study's location, from the experiment's checkpoint."""
    restored = tuner._local_tuner  # Tune has no public way to give a restored experiment new ones
    if search_alg is not None:
        restored._tune_config.search_alg = search_alg
    restored._run_config.callbacks = callbacks


def fit_all(tuner, sweep_dir: Path) -> int:
    """Run a Tune experiment, bring the sweep's results table up to date and return how many of its trials
    are done. A trial whose worker died counts as done: it is recorded as failed, and the sweep goes on
    (``--resume`` runs it again)."""
    done = 0
    for result in tuner.fit():
        if result.error is not None:  # its worker died: recorded as failed (``progress.ResultsTable``)
            done += 1
        elif result.metrics and result.metrics.get("done"):
            done += 1
            mark_stopped(Path(result.path), result.metrics)
    write_results_table(sweep_dir)
    return done


def require_finished(done: int, planned: int) -> None:
    """A stage that ended with fewer than its ``planned`` trials done (Tune returns normally on Ctrl-C) stops
    the sweep instead of going on to the next stage with a partial one."""
    if done < planned:
        raise SweepInterrupted(f"{done} of {planned} trials of this stage finished; continue with --resume")

