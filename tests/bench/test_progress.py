import io
import math
from types import SimpleNamespace

from rich.console import Console
from rich.progress import Progress

from mrfbench.cli.sweeps import sweep_progress
from mrfbench.progress import SweepProgress


def trial(trial_id, model, stage, result=None, seeds=(0,)):
    spec = {"model": model, "stage": stage, "seed": seeds[0], "params": {}, "dataset": "copula", "epochs": 2,
            "device": "cpu", "cpus": 1, "dataset_options": {}, "eval_options": {},
            "pack_seeds": list(seeds) if len(seeds) > 1 else []}
    return SimpleNamespace(trial_id=trial_id, config={"trial": spec}, last_result=result)


SCORED = {"score": 3.0, "train_wall_time_s": 12.0, "unconditional/wasserstein_mean": 5.5,
          "conditional/wasserstein_mean": 0.5}


def test_the_sweep_bar_keeps_the_best_score_of_each_model_and_stage():
    """A trial ASHA stopped counts as done but its per-epoch proxy is no score; a failed trial is failed."""
    with Progress(disable=True) as progress:
        bar = SweepProgress(progress, 5)
        bar.on_trial_start(0, [], trial("a", "gmrf", "search"))
        assert bar.running == {"a": "gmrf search"}
        bar.on_trial_complete(0, [], trial("a", "gmrf", "search", SCORED))
        bar.on_trial_complete(0, [], trial("b", "gmrf", "search", {"score": 1.0}))  # stopped early, proxy only
        bar.on_trial_complete(0, [], trial("c", "mvae", "search", {"score": math.nan, "failed": 1.0}))
        bar.on_trial_complete(0, [], trial("d", "gmrf", "final", {**SCORED, "score": 2.0}))
        assert (bar.done, bar.failed, bar.running) == (3, 1, {})
        assert bar.best == {"gmrf search": 3.0, "gmrf final": 2.0}


def test_a_sweep_piped_to_a_file_prints_a_line_per_finished_trial_as_it_ends():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with Progress(console=console, disable=True) as progress:
        bar = SweepProgress(progress, 5)  # runs: a pack's members count one each
        bar.on_trial_complete(0, [], trial("a", "gmrf", "final", SCORED, seeds=(0, 1, 2)))
        assert out.getvalue().splitlines() == [
            "[3/5] gmrf final seeds 0-2: score 3, unconditional/wasserstein_mean 5.5, "
            "conditional/wasserstein_mean 0.5 (12 s training), ETA 0 s"]
        bar.on_trial_complete(0, [], trial("b", "mvae", "final", {"score": math.nan, "failed": 1.0}))
        bar.on_trial_error(0, [], trial("c", "mopoe", "final"))
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("[4/5] mvae final seed 0: failed (its reason: trial.json), ETA")
    assert lines[2] == "[5/5] mopoe final seed 0: failed (its worker ended)"


def test_a_resumed_sweep_counts_its_finished_runs_and_times_the_rest_by_this_sitting(monkeypatch):
    import mrfbench.progress

    out = io.StringIO()
    clock = iter([0.0, 600.0])  # started, then one run finished ten minutes later
    monkeypatch.setattr(mrfbench.progress.time, "monotonic", lambda: next(clock))
    with Progress(console=Console(file=out, force_terminal=False, width=100), disable=True) as progress:
        bar = SweepProgress(progress, 9, finished=(5, 1))  # six runs finished in an earlier sitting
        bar.on_trial_complete(0, [], trial("a", "nnmrf", "final-nnmrf", SCORED))
    assert out.getvalue().startswith("[7/9] nnmrf final-nnmrf seed 0: score 3")
    assert out.getvalue().rstrip().endswith("ETA 20 min")  # two runs left at this sitting's ten minutes a run


def test_the_terminal_display_fits_80_and_100_columns_with_five_models(monkeypatch):
    import mrfbench.cli.sweeps

    for width in (80, 100):
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=width, color_system=None)
        monkeypatch.setattr(mrfbench.cli.sweeps, "console", console)
        with sweep_progress() as progress:
            bar = SweepProgress(progress, 21)
            for i, model in enumerate(("gmrf", "mvae", "mopoe", "mmvae", "mmvaeplus")):
                bar.on_trial_start(0, [], trial(str(i), model, "final", seeds=(0, 1, 2)))
            bar.on_trial_complete(0, [], trial("0", "gmrf", "final", SCORED, seeds=(0, 1, 2)))
            progress.refresh()
        rendered = [line for chunk in out.getvalue().split("\r") for line in chunk.split("\n")]
        bars = [_visible(line) for line in rendered if _visible(line).startswith("sweep ")]
        assert bars and all(len(line.rstrip()) <= width for line in bars), bars
        assert any("4 running" in line for line in bars)


def _visible(line: str) -> str:
    """A rendered line without the terminal's control sequences."""
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)


def test_the_dashboard_hint_matches_the_auth_mode_and_whose_dashboard_it_is():
    from mrfbench.cli.sweeps import dashboard_hint

    local = dashboard_hint("http://127.0.0.1:8265", None, "token")
    assert "for this sweep's life" in local and "ray get-auth-token" in local and "head node" not in local
    cluster = dashboard_hint("http://head:8265", "head:6379", "token")
    assert "the cluster's" in cluster and "on the head node" in cluster
    assert "no login" in dashboard_hint("http://127.0.0.1:8265", None, "disabled")
