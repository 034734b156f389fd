"""The Optuna studies a sweep keeps beside Tune's own records: the final stage (the seeds, or the --grid) as
a study of its own, rewritten as each of its trials ends, so optuna-dashboard shows it while the sweep runs."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from mrfbench.sweeps.records import results_records
from mrfbench.version import __version__


def distribution(values: list):
    """The Optuna distribution of a parameter's values across the final trials: a float or int range (on a
    log scale where positive values span more than a decade) for numbers, categories otherwise."""
    import optuna

    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(values) < 2 or len(numbers) < len(values):
        return optuna.distributions.CategoricalDistribution(values)
    low, high = min(numbers), max(numbers)
    log = low > 0 and high / low > 10
    if all(isinstance(v, int) for v in numbers):
        return optuna.distributions.IntDistribution(low, high, log=log)
    return optuna.distributions.FloatDistribution(low, high, log=log)


def record_final_study(sweep_dir: Path, storage_url: str, name: str) -> None:
    """The final stage's trials as the study ``name``: each trial's model and parameters, its score (the
    objective "score"), its seed, stage and figures as user attributes; the study notes the sweep folder and
    the mrfbench version. Written anew each time, so a resumed sweep records each trial once."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    records = [r for r in results_records(sweep_dir) if r.get("stage") == "final"]
    if not records:
        return
    storage = optuna.storages.RDBStorage(storage_url)
    if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        optuna.delete_study(study_name=name, storage=storage)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    with warnings.catch_warnings():  # stable since Optuna 3.2, still flagged experimental
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.set_metric_names(["score"])
    study.set_user_attr("sweep", str(Path(sweep_dir).resolve()))
    study.set_user_attr("mrfbench_version", __version__)
    params = [{"model": r["model"], **r["params"]} for r in records]
    values: dict[str, list] = {}
    for trial_params in params:
        for key, value in trial_params.items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    distributions = {key: distribution(vals) for key, vals in values.items()}
    for record, trial_params in zip(records, params):
        score = (record.get("metrics") or {}).get("score")
        ok = record.get("status") == "ok" and isinstance(score, float) and math.isfinite(score)
        figures = {k: v for k, v in (record.get("metrics") or {}).items() if "/" in k}
        study.add_trial(optuna.trial.create_trial(
            params=trial_params, value=score if ok else None,
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
            distributions={k: distributions[k] for k in trial_params},
            user_attrs={**figures, "seed": record["seed"], "stage": "final", "error": record.get("error", "")}))
