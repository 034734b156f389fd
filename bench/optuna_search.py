"""Ray's OptunaSearch, recording what a reader of the Optuna study (optuna-dashboard) wants."""

from __future__ import annotations

import math
import warnings

from optuna.exceptions import ExperimentalWarning
from ray.tune.search.optuna import OptunaSearch


class RecordingOptunaSearch(OptunaSearch):
    """Names the objective ("score"), stores each finished trial's figures, seed and Tune trial id as user
    attributes, and reports to Optuna only the per-epoch results that carry a score (a data set without a
    per-epoch proxy reports its losses alone), with no warning for each epoch a resumed trial reports again.
    A trial Optuna has closed (failed, then run again on --resume) is left alone: its record is the trial's
    own trial.json. A trial that failed (its score NaN) is told to Optuna as failed, so the sampler learns
    of it (Optuna refuses a NaN value and would leave the trial running)."""

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
