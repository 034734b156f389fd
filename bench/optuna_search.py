"""Ray's OptunaSearch, recording what a reader of the Optuna study (optuna-dashboard) wants."""

from __future__ import annotations

import math
import pickle
import warnings

import optuna
from optuna.exceptions import ExperimentalWarning
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch


class _KeepsItsStudy:
    """A searcher Tune saves and restores with its state but never its study's location (``_LOCATION``, its
    attributes): the study is the restoring process's, so a sweep moved or copied elsewhere goes on in the
    study where it now lies. A subclass takes the saved state in ``_take``, its study open."""

    _LOCATION: tuple[str, ...] = ()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._LOCATION}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.update(dict.fromkeys(self._LOCATION))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__getstate__(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self._take(pickle.load(handle))

    def _take(self, state: dict) -> None:
        raise NotImplementedError


class RecordingOptunaSearch(_KeepsItsStudy, OptunaSearch):
    """Names the objective ("score"), stores each finished trial's figures, seed and Tune trial id as user
    attributes, and reports to Optuna only the per-epoch results that carry a score (a data set without a
    per-epoch proxy reports its losses alone), with no warning for each epoch a resumed trial reports again.
    A trial Optuna has closed (failed, then run again on --resume) is left alone: its record is the trial's
    own trial.json. A trial that failed (its score NaN) is told to Optuna as failed, so the sampler learns
    of it (Optuna refuses a NaN value and would leave the trial running)."""

    _LOCATION = ("_storage", "_study_name", "_ot_study")  # where the study lives: this process's, never restored

    def _setup_study(self, mode):
        super()._setup_study(mode)
        with warnings.catch_warnings():  # stable since Optuna 3.2, still flagged experimental
            warnings.simplefilter("ignore", ExperimentalWarning)
            self._ot_study.set_metric_names(["score"])

    def on_trial_result(self, trial_id: str, result: dict):
        if self.metric in result and trial_id not in self._completed_trials:
            with warnings.catch_warnings():  # a trial run again on --resume re-reports its epochs; Optuna
                warnings.filterwarnings("ignore", "The reported value is ignored", UserWarning)  # keeps the first
                super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials:  # an errored trial run again on --resume: Optuna closed it
            return
        trial = self._ot_trials.get(trial_id)
        if trial is not None and result:
            figures = {k: v for k, v in result.items() if "/" in k and isinstance(v, float) and math.isfinite(v)}
            for key, value in {**figures, "seed": 0, "tune_trial_id": trial_id}.items():
                trial.set_user_attr(key, value)
        score = (result or {}).get(self.metric)
        if result and (result.get("failed") or (score is not None and not math.isfinite(score))):
            result, error = None, True
        super().on_trial_complete(trial_id, result, error)

    def __getstate__(self) -> dict:
        """Its trials kept by number."""
        return {**super().__getstate__(), "_ot_trials": {tid: t.number for tid, t in self._ot_trials.items()}}

    def _take(self, state: dict) -> None:
        numbers = state.pop("_ot_trials")
        self.__dict__.update(state)
        self._ot_study.sampler = self._sampler
        study_id = self._storage.get_study_id_from_name(self._study_name)
        self._ot_trials = {tid: optuna.trial.Trial(self._ot_study, self._storage.get_trial_id_from_study_id_trial_number(
            study_id, number)) for tid, number in numbers.items()}


class PackedOptunaSearch(_KeepsItsStudy, Searcher):
    """Asks Optuna for up to ``pack_size`` trials at a time and hands them to Tune as packs: the asked trials
    whose parameters keep the same tensor shapes (``pack_runs.pack_key``) become one Tune trial, a pack of
    Optuna trials trained together (``sweeps.packs``); one alone is a trial as ``RecordingOptunaSearch``
    makes it. When a trial ends, each member's score (its ``member_scores/optuna<N>``, or the trial's score)
    is told to Optuna, a failed member as failed. ``n_trials`` Optuna trials in all; the study lives in
    ``storage_url`` under ``study_name`` (a restored searcher reopens it there)."""

    def __init__(self, space: dict, fixed: dict, n_trials: int, pack_size: int, sampler, storage_url: str,
                 study_name: str, start: dict | None = None):
        super().__init__(metric="score", mode="min")
        self.space, self.fixed, self.n_trials, self.pack_size = space, fixed, n_trials, pack_size
        self.sampler, self.storage_url, self.study_name = sampler, storage_url, study_name
        self.pending: list[list[dict]] = []  # asked trials grouped into packs, not yet handed to Tune
        self.packs: dict[str, list[int]] = {}  # Tune trial id -> its members' Optuna trial numbers
        self.asked = 0
        self._open_study(start)

    def _open_study(self, start: dict | None = None) -> None:
        self.study = optuna.create_study(storage=self.storage_url, study_name=self.study_name, sampler=self.sampler,
                                         direction="minimize", load_if_exists=True)
        with warnings.catch_warnings():  # stable since Optuna 3.2, still flagged experimental
            warnings.simplefilter("ignore", ExperimentalWarning)
            self.study.set_metric_names(["score"])
        if start and not self.study.trials:
            self.study.enqueue_trial(start)

    _LOCATION = ("storage_url", "study_name", "study")  # where the study lives: this process's, never restored

    def _take(self, state: dict) -> None:
        self.__dict__.update(state)
        self.study.sampler = self.sampler

    def _ask_round(self) -> None:
        """Ask Optuna for the next round (at most ``pack_size`` trials) and group it into packs."""
        from mrfbench.pack_runs import pack_key

        groups: dict[str, list[dict]] = {}
        for _ in range(min(self.pack_size, self.n_trials - self.asked)):
            trial = self.study.ask(self.space)
            trial.set_user_attr("seed", 0)
            groups.setdefault(pack_key({**self.fixed, **trial.params}), []).append(
                {"number": trial.number, "params": dict(trial.params)})
            self.asked += 1
        self.pending.extend(groups.values())

    def suggest(self, trial_id: str):
        if not self.pending:
            if self.asked >= self.n_trials:
                return Searcher.FINISHED
            self._ask_round()
        pack = self.pending.pop(0)
        self.packs[trial_id] = [t["number"] for t in pack]
        if len(pack) == 1:  # a trial of its own, its values beside its spec (as RecordingOptunaSearch's)
            return dict(pack[0]["params"])
        return {"trial": {"pack_trials": pack}}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        numbers = self.packs.pop(trial_id, [])
        for number in numbers:
            alone = (result or {}).get("score", math.nan) if len(numbers) == 1 else math.nan
            score = (result or {}).get(f"member_scores/optuna{number}", alone)
            failed = error or not isinstance(score, (int, float)) or not math.isfinite(score)
            with warnings.catch_warnings():  # a member told on an earlier run of a resumed sweep is skipped
                warnings.simplefilter("ignore", UserWarning)
                self.study.tell(number, None if failed else float(score), skip_if_finished=True,
                                state=optuna.trial.TrialState.FAIL if failed else None)


def told_trials(study) -> int:
    """The trials of an Optuna study that have ended (complete or failed)."""
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
