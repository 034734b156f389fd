import math

import optuna

from mrfbench.optuna_search import RecordingOptunaSearch


def test_figures_become_user_attributes_and_a_closed_trial_is_left_alone():
    """An errored trial that --resume runs again must not touch its closed Optuna trial (Optuna refuses to
    update a finished trial, which stopped the sweep)."""
    search = RecordingOptunaSearch(space={"beta": optuna.distributions.FloatDistribution(0.1, 2.0)},
                                   metric="score", mode="min", sampler=optuna.samplers.RandomSampler(seed=0))
    search.suggest("a")
    search.suggest("b")
    search.on_trial_result("a", {"train_loss": 1.0, "training_iteration": 1})  # no score: not reported
    search.on_trial_complete("a", {"score": 2.0, "unconditional/wasserstein_mean": 3.0, "seed_like": math.nan})
    search.on_trial_complete("b", None, error=True)
    search.on_trial_result("b", {"score": 1.0, "training_iteration": 1})  # run again after the error
    search.on_trial_complete("b", {"score": 1.0, "unconditional/wasserstein_mean": 1.5})
    a, b = search._ot_study.trials
    assert a.value == 2.0 and a.user_attrs == {"unconditional/wasserstein_mean": 3.0, "seed": 0, "tune_trial_id": "a"}
    assert a.intermediate_values == {} and b.state == optuna.trial.TrialState.FAIL
    assert search._ot_study.metric_names == ["score"]


def test_a_failed_trial_is_failed_in_the_study():
    search = RecordingOptunaSearch(space={"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)},
                                   metric="score", mode="min", sampler=optuna.samplers.RandomSampler(seed=0))
    for trial_id in ("nan", "ok"):
        search.suggest(trial_id)
    search.on_trial_complete("nan", {"score": math.nan, "failed": 1.0})
    search.on_trial_complete("ok", {"score": 1.5})
    failed, done = search._ot_study.trials
    assert failed.state == optuna.trial.TrialState.FAIL and done.state == optuna.trial.TrialState.COMPLETE
