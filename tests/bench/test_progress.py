import math
from types import SimpleNamespace

from rich.progress import Progress

from mrfbench.progress import SweepProgress


def trial(trial_id, model, stage, result=None):
    return SimpleNamespace(trial_id=trial_id, config={"trial": {"model": model, "stage": stage}}, last_result=result)


def test_the_sweep_bar_keeps_the_best_score_of_each_model_and_stage():
    """A trial ASHA stopped counts as done but its per-epoch proxy is no score; a failed trial is failed."""
    with Progress(disable=True) as progress:
        bar = SweepProgress(progress, 5)
        bar.on_trial_start(0, [], trial("a", "gmrf", "search"))
        assert bar.running == {"a": "gmrf search"}
        bar.on_trial_complete(0, [], trial("a", "gmrf", "search", {"score": 3.0, "train_wall_time_s": 1.0}))
        bar.on_trial_complete(0, [], trial("b", "gmrf", "search", {"score": 1.0}))  # stopped early, proxy only
        bar.on_trial_complete(0, [], trial("c", "mvae", "search", {"score": math.nan, "failed": 1.0}))
        bar.on_trial_complete(0, [], trial("d", "gmrf", "final", {"score": 2.0, "train_wall_time_s": 1.0}))
        assert (bar.done, bar.failed, bar.running) == (3, 1, {})
        assert bar.best == {"gmrf search": 3.0, "gmrf final": 2.0}
