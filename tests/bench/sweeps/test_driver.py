import contextlib
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from mrfbench.aggregation import aggregate, read_trials, tidy, write_leaderboard
from mrfbench.datasets import get_benchmark
from mrfbench.errors import UsageError
from mrfbench.runs import is_staging
from mrfbench.sweeps import SWEEP_FILE, Sweep, SweepSettings, results_records

TINY = dict(
    trials=2, seeds=2, epochs=1, cpus_per_trial=1,
    dataset_options={"n_train": 256, "n_val": 64, "n_test": 32},
    eval_options={"n_unconditional": 2000, "n_per_tuple": 2, "n_joint": 1000, "n_tau": 500, "n_projections": 20},
    search_eval_options={},
)


def budget_file(folder, space: str, sweep: dict, **top) -> str:
    """A shipped space with another ``sweep:`` section (and top-level keys): a budget for a test."""
    from importlib.resources import files

    import yaml

    raw = yaml.safe_load(files("mrfbench.search_spaces").joinpath(f"{space}.yaml").read_text())
    path = folder / f"{space}-tiny.yaml"
    path.write_text(yaml.safe_dump({**raw, **top, "sweep": sweep}))
    return str(path)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_tiny_sweep_produces_a_leaderboard(local_ray, tmp_path):
    out = tmp_path / "sweep"
    Sweep(SweepSettings(out=str(out), space="copula", models=["gmrf", "mvae"], packs=True, **TINY)).run()
    records = results_records(out)
    for model in ("gmrf", "mvae"):
        search = [r for r in records if r["model"] == model and r["stage"] == "search"]
        final = [r for r in records if r["model"] == model and r["stage"] == "final"]
        assert len(search) == 2 and sorted(r["seed"] for r in final) == [0, 1]
        assert all(r["status"] == "ok" and r["threads"] == 1 for r in search + final)  # torch threads = --cpus-per-trial
        best = min(search, key=lambda r: r["metrics"]["score"])
        assert all(r["params"] == best["params"] for r in final)  # the best searched config, re-run over seeds
    assert (out / "optuna.db").exists()
    table = pd.read_csv(out / "results.csv")  # one row per trial, kept up to date as trials finish
    assert len(table) == len(records) and {"trial", "model", "stage", "seed", "param_beta", "score", "started"} <= set(table)
    assert table["trial"].str.match(r"(gmrf|mvae)_search_seed0_[^/]+$|(gmrf|mvae)_final_seeds0-1_[^/]+/seed[01]$").all()
    md, csv, board, _ = write_leaderboard(out, tmp_path / "results")
    assert md == tmp_path / "results" / "copula" / "leaderboard.md"
    assert sorted(board["model"]) == ["gmrf", "mvae"] and set(board["seeds"]) == {2}
    assert "0.86" in md.read_text()  # the paper's GMRF figure beside ours
    assert "Budget: search space `copula`, 1 epochs per run; data: n_train 256, n_val 64, n_test 32; scoring: " \
        "n_unconditional 2,000" in md.read_text()
    assert pd.read_csv(csv).shape[0] == 2
    session = Path(local_ray._private.worker._global_node.get_session_dir_path())
    logs = "".join(p.read_text(errors="replace") for p in (session / "logs").glob("worker-*.out"))
    assert "epoch 1: lr " in logs and "train_loss" in logs  # each trial's log (its actor's Log) shows its epochs
    assert "(mean of 2 members)" in logs  # and a pack trial's, the members' mean


@pytest.mark.slow
def test_grid_sampler_searches_each_grid_point_once_then_reruns_the_best_over_seeds(local_ray, tmp_path, read_scalars):
    space = tmp_path / "space.yaml"
    space.write_text("dataset: copula\nepochs: 1\nseeds: 2\nparams:\n  beta: {grid: [1.0, 0.5, 0.1]}\n"
                     "models:\n  gmrf:\n    latent_dim: 2\n")
    out = tmp_path / "gridsearch"
    sweep = Sweep(SweepSettings(out=str(out), space=str(space), sampler="grid", packs=True, pack_size=1,
                                **{**TINY, "trials": 1, "epochs": 3}))
    assert sweep.planned_runs() == 3 + 2  # three searched, then the best over two seeds
    sweep.run()
    records = results_records(out)
    search = [r for r in records if r["stage"] == "search"]
    final = [r for r in records if r["stage"] == "final"]
    assert sorted(r["params"]["beta"] for r in search) == [0.1, 0.5, 1.0] and all(r["seed"] == 0 for r in search)
    best = min(search, key=lambda r: r["metrics"]["score"])["params"]
    assert sorted(r["seed"] for r in final) == [0, 1] and all(r["params"] == best for r in final)
    md, _, _, _ = write_leaderboard(out, tmp_path / "results")
    assert md.read_text().count("(best)") == 1  # the search stage is listed apart, its best marked
    import optuna

    study = optuna.load_study(study_name="gridsearch-gmrf", storage=f"sqlite:///{out / 'optuna.db'}")
    assert sorted(t.params["beta"] for t in study.trials) == [0.1, 0.5, 1.0]  # plain names, not job/params/beta
    assert study.metric_names == ["score"] and all(t.user_attrs["seed"] == 0 for t in study.trials)
    assert all(len(t.intermediate_values) == 3 + 1 for t in study.trials)  # the proxy each epoch, then the score
    by_score = {round(t.value, 9): t.user_attrs for t in study.trials}
    for r in search:
        assert by_score[round(r["metrics"]["score"], 9)]["conditional/wasserstein_mean"] == pytest.approx(
            r["metrics"]["conditional/wasserstein_mean"])
    seeds = optuna.load_study(study_name="gridsearch-final", storage=f"sqlite:///{out / 'optuna.db'}").trials
    assert sorted(t.user_attrs["seed"] for t in seeds) == [0, 1] and {t.params["model"] for t in seeds} == {"gmrf"}
    members = sorted((out / "final").glob("*/seed*/trial.json"))
    assert [(p.parent.parent.name[:18], p.parent.name) for p in members] == [("gmrf_final_seeds0-", "seed0"),
                                                                            ("gmrf_final_seeds0-", "seed1")]
    curves = read_scalars(members[0].parent.parent)  # the pack's curves: its members' mean losses
    assert all(len(curves[f"ray/tune/{k}"]) == 3 for k in ("train_loss", "val_loss", "val_kl"))  # a point an epoch
    with pytest.raises(UsageError, match="needs grid or choice values"):
        Sweep(SweepSettings(out=str(tmp_path / "x"), space="copula", sampler="grid"))


@pytest.mark.slow
def test_a_budget_with_learning_curves_scores_every_run_as_it_trains(local_ray, tmp_path):
    """A budget's ``score_every`` (or --score-every): each run keeps its curve, so its seeds train one by one."""
    from mrfbench.spaces import load_space

    space = tmp_path / "space.yaml"
    space.write_text("dataset: copula\nepochs: 2\nseeds: 2\nsweep:\n  grid: true\n  score_every: 1\n"
                     "params:\n  beta: 1.0\nmodels:\n  gmrf:\n    latent_dim: 2\n")
    out = tmp_path / "curves"
    budget = load_space(str(space)).sweep
    Sweep(SweepSettings(out=str(out), space=str(space), **{**TINY, "epochs": 2, **budget})).run()
    records = results_records(out)
    assert sorted(r["seed"] for r in records) == [0, 1] and all(r.get("pack_size") is None for r in records)
    curves = sorted(out.glob("final/*/run/learning_curve.csv"))
    assert len(curves) == 2
    rows = pd.read_csv(curves[0])
    assert list(rows["epoch"]) == [1, 2] and "conditional/wasserstein_mean" in rows


@pytest.mark.slow
def test_a_packed_search_trains_each_rounds_trials_of_one_shape_as_one_pack(local_ray, tmp_path):
    import optuna

    space = tmp_path / "space.yaml"
    space.write_text("dataset: copula\nparams:\n  beta: {loguniform: [0.1, 2.0]}\n"
                     "models:\n  gmrf:\n    latent_dim: {choice: [2, 3]}\n")
    out = tmp_path / "packed"
    Sweep(SweepSettings(out=str(out), space=str(space), sampler="random", packs=True, pack_size=4,
                        **{**TINY, "trials": 4, "seeds": 1})).run()
    search = results_records(out / "search-gmrf")
    assert len(search) == 4 and all(r["status"] == "ok" and r["seed"] == 0 for r in search)
    trial_dirs = sorted(p for p in (out / "search-gmrf").iterdir() if p.is_dir() and p.name.startswith("gmrf_"))
    assert len(trial_dirs) == len({r["params"]["latent_dim"] for r in search})  # a Tune trial per shape
    study = optuna.load_study(study_name="packed-gmrf", storage=f"sqlite:///{out / 'optuna.db'}")
    values = {t.number: t.value for t in study.trials}
    assert len(values) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    members = {r["optuna_trial"]: r for r in search if "optuna_trial" in r}
    assert members and all(values[n] == pytest.approx(r["metrics"]["score"]) for n, r in members.items())
    assert all(study.trials[n].params == {k: r["params"][k] for k in ("beta", "latent_dim")} for n, r in members.items())
    best = min(search, key=lambda r: r["metrics"]["score"])["params"]
    final = [r for r in results_records(out) if r["stage"] == "final"]
    assert len(final) == 1 and final[0]["params"] == best
    assert len(pd.read_csv(out / "results.csv")) == 5


@pytest.mark.slow
def test_asha_search_reports_every_epoch_and_starts_from_its_start_point(local_ray, tmp_path):
    import optuna

    space = tmp_path / "space.yaml"
    space.write_text("dataset: copula\nparams:\n  beta: {loguniform: [0.5, 2.0]}\n"
                     "models:\n  gmrf:\n    start: {beta: 0.7}\n")
    out = tmp_path / "asha"
    Sweep(SweepSettings(out=str(out), space=str(space), asha=True, sampler="random",
                        **{**TINY, "epochs": 3, "seeds": 1})).run()
    first = optuna.load_study(study_name="asha-gmrf", storage=f"sqlite:///{out / 'optuna.db'}").trials[0]
    assert first.params == {"beta": 0.7}
    search = [r for r in results_records(out) if r["stage"] == "search"]
    # ASHA may stop the worse trial early: it then never reaches its final scoring, and is recorded as stopped
    assert len(search) == 2 and any(r["status"] == "ok" for r in search)
    assert all(r["status"] == "ok" or (r["status"] == "stopped" and 1 <= r["stopped_epoch"] < 3) for r in search)
    for progress in out.glob("search-gmrf/*/progress.csv"):
        assert pd.read_csv(progress)["score"].notna().all()  # per-epoch proxy scores for ASHA
    final = [r for r in results_records(out) if r["stage"] == "final"]
    assert len(final) == 1 and final[0]["status"] == "ok"


def test_models_added_to_a_sweep_get_a_final_experiment_of_their_own(tmp_path):
    settings = SweepSettings(out=str(tmp_path), space="copula_paper", models=["gmrf", "mvae"], grid=True)
    (tmp_path / SWEEP_FILE).write_text(json.dumps(dataclasses.asdict(settings)))
    assert Sweep.resume(tmp_path, ["mvae"]).final_experiments() == [("final", ["gmrf", "mvae"])]
    grown = Sweep.resume(tmp_path, ["nnmrf", "gmrf", "almrf"])
    assert grown.final_experiments() == [("final", ["gmrf", "mvae"]), ("final-nnmrf-almrf", ["nnmrf", "almrf"])]
    assert grown.planned_runs() == 12  # each model's three seeds
    with pytest.raises(UsageError, match="vae not in search space copula_paper"):
        Sweep.resume(tmp_path, ["vae"])


@pytest.mark.slow
def test_a_model_added_to_a_finished_sweep_runs_alone_and_joins_its_leaderboard(local_ray, tmp_path):
    out = tmp_path / "grown"
    Sweep(SweepSettings(out=str(out), space="copula_quick", models=["gmrf"], grid=True, **{**TINY, "seeds": 1})).run()
    [first] = (out / "final").glob("*/trial.json")
    before = first.read_text()
    Sweep.resume(out, ["mopoe"]).run()
    assert first.read_text() == before  # nothing finished is run again
    records = sorted((r["model"], r["stage"], r["status"]) for r in results_records(out))
    assert records == [("gmrf", "final", "ok"), ("mopoe", "final", "ok")]
    assert [p.parent.parent.name for p in out.glob("*/*/trial.json")] == ["final", "final-mopoe"]
    assert set(write_leaderboard(out)[2]["model"]) == {"gmrf", "mopoe"}
    assert Sweep.resume(out).final_experiments() == [("final", ["gmrf"]), ("final-mopoe", ["mopoe"])]  # saved


def test_asha_lets_a_full_length_trial_reach_its_scoring(tmp_path):
    """ASHA's default max_t (100) stopped every 200-epoch trial at epoch 100, before it was ever scored."""
    asha = Sweep(SweepSettings(out=str(tmp_path / "x"), space="copula", asha=True, epochs=200))._asha()
    assert asha._max_t == 201 and asha._time_attr == "training_iteration"


def test_a_stage_left_unfinished_stops_the_sweep(tmp_path):
    """Tune returns normally on Ctrl-C; the sweep used to go on to the final stage with a partial search."""
    from types import SimpleNamespace

    from mrfbench.errors import SweepInterrupted
    from mrfbench.sweeps import fit_all, require_finished

    def tuner(*done, error=None):
        return SimpleNamespace(fit=lambda: [SimpleNamespace(metrics={"done": d}, path=str(tmp_path / "none"),
                                                            error=error) for d in done])

    assert fit_all(tuner(True, True), tmp_path) == 2
    assert fit_all(tuner(False, error=RuntimeError("worker died")), tmp_path) == 1  # recorded as failed: done
    require_finished(2, 2)
    with pytest.raises(SweepInterrupted, match="1 of 3 trials"):
        require_finished(fit_all(tuner(True, False), tmp_path), 3)


def test_a_trial_the_scheduler_stopped_is_recorded_as_stopped(tmp_path):
    """ASHA ends a trial from outside: its trial.json said "running" for good, and results.csv with it."""
    from types import SimpleNamespace

    from mrfbench.runs import read_json_object, write_json
    from mrfbench.sweeps import TRIAL_FILE, fit_all

    stage = tmp_path / "search-gmrf"
    for name, status in (("stopped", "running"), ("scored", "ok")):
        (stage / name).mkdir(parents=True)
        write_json(stage / name / TRIAL_FILE, {"model": "gmrf", "stage": "search", "status": status})
    results = [SimpleNamespace(metrics={"done": True, "training_iteration": 4}, path=str(stage / name), error=None)
               for name in ("stopped", "scored")]
    fit_all(SimpleNamespace(fit=lambda: results), tmp_path)
    stopped, scored = (read_json_object(stage / name / TRIAL_FILE) for name in ("stopped", "scored"))
    assert (stopped["status"], stopped["stopped_epoch"], scored["status"]) == ("stopped", 4, "ok")
    table = pd.read_csv(tmp_path / "results.csv").set_index("trial")
    assert table.loc["stopped", "status"] == "stopped" and table.loc["stopped", "stopped_epoch"] == 4


@pytest.mark.slow
def test_grid_sweep_runs_every_combination_and_records_failures(local_ray, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("dataset: copula\nepochs: 1\nseeds: 1\nparams:\n  beta: {grid: [1.0, 0.5]}\n"
                     "models:\n  gmrf:\n    lr: {grid: [0.001, 1.0e+6]}\n")
    out = tmp_path / "grid"
    Sweep(SweepSettings(out=str(out), space=str(space), grid=True, **{**TINY, "seeds": None})).run()
    records = results_records(out)
    assert sorted((r["params"]["beta"], r["params"]["lr"]) for r in records) == [
        (0.5, 0.001), (0.5, 1e6), (1.0, 0.001), (1.0, 1e6)]
    failed = [r for r in records if r["status"] == "failed"]
    assert failed and all(r["params"]["lr"] == 1e6 for r in failed)  # a huge lr diverges: recorded, sweep goes on
    assert all("non-finite" in r["error"] or "Error" in r["error"] for r in failed)
    md, _, _, _ = write_leaderboard(out, tmp_path / "results")
    assert "Failed trials" in md.read_text()


def test_aggregator_means_and_stds_on_a_hand_made_table():
    def record(model, beta, seed, score, stage="final"):
        return {"model": model, "params": {"beta": beta}, "seed": seed, "stage": stage, "status": "ok",
                "metrics": {"score": score, "unconditional/wasserstein_mean": 2 * score}}

    records = [record("gmrf", 1.0, 0, 1.0), record("gmrf", 1.0, 1, 3.0), record("gmrf", 1.0, 2, 5.0),
               record("gmrf", 0.1, 0, 10.0), record("mvae", 1.0, 0, 4.0),
               {"model": "mvae", "params": {"beta": 1.0}, "seed": 1, "stage": "final", "status": "failed",
                "error": "FloatingPointError: nan"}]
    table = tidy(records)
    assert list(table.columns) == ["model", "variant", "config", "seed", "stage", "status", "error", "metric", "value"]
    summary = aggregate(table).set_index(["model", "variant", "metric"])
    row = summary.loc[("gmrf", "beta=1", "score")]
    assert row["mean"] == pytest.approx(3.0) and row["std"] == pytest.approx(2.0) and row["n"] == 3
    assert summary.loc[("gmrf", "beta=1", "unconditional/wasserstein_mean"), "mean"] == pytest.approx(6.0)
    mvae = summary.loc[("mvae", "beta=1", "score")]
    assert mvae["n"] == 1 and math.isnan(mvae["std"])  # the failed seed is not averaged in


def image_metrics(coherence: float, inception: bool = False) -> dict:
    """The sections an image run's metrics.json has (mrfbench.evaluators.images.score)."""
    fids = {"fid_suite": 3.0, "fid_suite_per_modality": [3.0] * 5, **({"fid": 90.0} if inception else {})}
    return {"n_tuples": 100, "collapse": {"collapsed": False}, "training": {"wall_time_s": 5.0},
            "unconditional": {"coherence": coherence / 2, **fids, "floor": {"fid_suite": 0.5}},
            "conditional": {"coherence": coherence, "coherence_by_size": {"size_1": coherence, "mean": coherence},
                            **fids, "ssim": 0.9, "floor": {"fid_suite": 0.5}, "ceiling": {"coherence": 0.96}}}


@pytest.mark.parametrize(("kl", "unreadable"), [([3.0, 4.0], 0.0), ([None, 4.0], 1.0), ([3.0, math.inf], 1.0)])
def test_a_collapse_report_with_a_kl_it_could_not_read_is_recorded(kl, unreadable):
    """An ALMRF seed's block KL came back NaN (null in its metrics.json) while its report said no collapse."""
    from mrfbench.evaluators import run_figures

    metrics = {**image_metrics(0.8), "collapse": {"collapsed": False, "kl_per_block": kl}}
    assert run_figures(metrics, "polymnist")["collapse_unreadable"] == unreadable


@pytest.mark.parametrize("inception", [False, True])
def test_image_leaderboard_keeps_fid_suite_apart_from_the_papers_fid(inception):
    from mrfbench.aggregation import leaderboard, to_markdown
    from mrfbench.datasets import get_benchmark
    from mrfbench.evaluators import run_figures

    polymnist = get_benchmark("polymnist")
    flat = run_figures(image_metrics(0.8, inception), "polymnist")
    assert flat["score"] == pytest.approx(1 - 0.5 * (0.4 + 0.8))
    assert flat["conditional/ceiling_coherence"] == 0.96 and flat["unconditional/floor_fid_suite"] == 0.5
    records = [{"model": "gmrf", "params": {"beta": b}, "seed": s, "stage": "final", "status": "ok",
                "metrics": run_figures(image_metrics(c + 0.02 * s, inception), "polymnist")}
               for b, c in ((1e-3, 0.8), (1e-4, 0.6)) for s in (0, 1)]
    board = leaderboard(aggregate(tidy(records)), polymnist).iloc[0]
    assert board["variant"] == "beta=0.001" and board["conditional/coherence mean"] == pytest.approx(0.81)
    assert board["conditional/coherence diff"] == pytest.approx(0.81 - 0.869)  # Table 1, GMRF
    assert board["unconditional/fid paper"] == pytest.approx(118.21)
    assert board["unconditional/fid source"] == ("fid" if inception else "fid_suite")
    if inception:
        assert board["unconditional/fid diff"] == pytest.approx(90.0 - 118.21)
    else:  # fid_suite is another metric: shown, starred, never subtracted from the paper's Inception FID
        assert board["unconditional/fid mean"] == 3.0 and pd.isna(board["unconditional/fid diff"])
    markdown = to_markdown(leaderboard(aggregate(tidy(records)), polymnist), polymnist, pd.DataFrame())
    assert ("* (118.21)" in markdown) != inception and "coherence ceiling" in markdown


def test_malformed_spaces_give_clear_errors(tmp_path):
    from mrfbench.spaces import load_space

    cases = {
        "dataset: copula\nmodels:\n  gmrf:\n    beta: {logUniform: [1, 2]}\n": "models.gmrf.beta",
        "dataset: copula\nmodels:\n  gmrf:\n    beta: -1\n": "beta must be > 0",
        "dataset: copula\nmodels:\n  gmrf:\n    colour: red\n": "models.gmrf.colour",
        "dataset: copula\nmodels:\n  gmrf:\n    lr: {loguniform: [0.1, 0.01]}\n": "low must be < high",
        "dataset: copula\nmodels:\n  nope: {}\n": "models.nope: unknown model",
        "dataset: mnist9\nmodels:\n  gmrf: {}\n": "unknown data set 'mnist9'",
        "dataset: copula\nepochs: 0\nmodels:\n  gmrf: {}\n": "epochs must be an integer >= 1",
        "dataset: copula\nmodel:\n  gmrf: {}\n": "unknown key(s) model",
        "dataset: copula\nepochs: true\nmodels:\n  gmrf: {}\n": "epochs must be an integer >= 1",
        "dataset: copula\nmetric: score\nmodels:\n  gmrf: {}\n": "unknown key(s) metric",
        "dataset: [copula\n": "not valid YAML",
        "dataset: copula\nparams:\n  beta: {uniform: [1, 2]}\nmodels:\n  gmrf:\n    start: {beta: 3}\n": "outside its uniform",
        "dataset: copula\nparams:\n  beta: {uniform: [1, 2]}\nmodels:\n  gmrf:\n    start: {lr: 0.1}\n": "give a value for each",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"space{i}.yaml"
        path.write_text(text)
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            load_space(str(path))
    assert load_space("copula_paper").fixed("mvae")["latent_dim"] == 3


def test_cli_reports_a_malformed_space_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: copula\nmodels:\n  gmrf:\n    beta: {uniform: [1]}\n")
    proc = subprocess.run([sys.executable, "-m", "mrfbench", "sweep", "--out", str(tmp_path / "s"), "--space", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "models.gmrf.beta.uniform: expected [low, high]" in proc.stderr


SWEEP_SCRIPT = """
import sys
from mrfbench.sweeps import Sweep, SweepSettings
settings = SweepSettings(out=sys.argv[1], space="copula", models=["gmrf"], {settings},
    dataset_options={{"n_train": 256, "n_val": 64, "n_test": 32}}, search_eval_options={{}},
    eval_options={{"n_unconditional": 2000, "n_per_tuple": 2, "n_joint": 1000, "n_tau": 500, "n_projections": 20}})
Sweep.resume(sys.argv[1]).run() if len(sys.argv) > 2 else Sweep(settings).run()
"""


class SweepProcess:
    """A tiny copula sweep in its own process group, to interrupt with Ctrl-C (or kill) and resume."""

    def __init__(self, tmp_path, settings: str, name: str = "sweep"):
        self.out, self.script = tmp_path / name, tmp_path / f"{name}.py"
        self.script.write_text(SWEEP_SCRIPT.format(settings=settings))
        self.env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
        self.proc = subprocess.Popen([sys.executable, str(self.script), str(self.out)], env=self.env,
                                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for(self, condition, what: str, seconds: float = 300):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if found := condition():
                return found
            time.sleep(0.2)
        raise AssertionError(f"{what} in time")

    def interrupt(self, how: signal.Signals = signal.SIGINT) -> None:
        os.killpg(self.proc.pid, how)  # Ctrl-C, or kill -9 of the driver and its Ray
        self.proc.wait(timeout=120)
        try:  # anything of the interrupted run still alive; never `ray stop`, which would kill every Ray here
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self) -> None:
        assert self.proc.wait(timeout=600) == 0

    def resume(self) -> subprocess.CompletedProcess:
        """Resume the sweep to its end; one that hangs fails within pytest's timeout, with its output."""
        try:
            resumed = subprocess.run([sys.executable, str(self.script), str(self.out), "resume"], env=self.env,
                                     capture_output=True, text=True, timeout=420)
        except subprocess.TimeoutExpired as hung:
            out = {name: (text.decode(errors="replace") if isinstance(text, bytes) else text or "")[-3000:]
                   for name, text in (("stdout", hung.stdout), ("stderr", hung.stderr))}
            raise AssertionError(f"the resumed sweep hung\nstdout: {out['stdout']}\nstderr: {out['stderr']}") from None
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        return resumed


@pytest.mark.slow
def test_an_interrupted_trial_resumes_from_its_last_training_state(tmp_path):
    sweep = SweepProcess(tmp_path, "trials=1, seeds=1, epochs=40, checkpoint_every_s=0")

    def epochs_reported():
        progress = list(sweep.out.glob("search-gmrf/*/progress.csv"))
        return progress and len(progress[0].read_text().splitlines()) - 1 >= 10

    sweep.wait_for(epochs_reported, "the trial did not reach epoch 10")
    sweep.interrupt()  # mid-trial
    sweep.resume()
    (search,) = [r for r in results_records(sweep.out) if r["stage"] == "search"]
    assert search["status"] == "ok" and search["resumed_after_epoch"] >= 9  # not from its first epoch
    (history,) = sweep.out.glob("search-gmrf/*/run/history.json")
    assert [r["epoch"] for r in json.loads(history.read_text())] == list(range(1, 41))
    assert not [p for p in sweep.out.rglob("*") if ".partial-" in p.name]  # no run half written, none copied in


@pytest.mark.slow
def test_an_interrupted_sweep_moved_elsewhere_resumes_there_with_every_trial_exactly_once(tmp_path):
    sweep = SweepProcess(tmp_path, "trials=3, seeds=2, epochs=1, max_concurrent_trials=1")

    def a_finished_trial():
        done = [p for p in sweep.out.glob("search-gmrf/*/trial.json") if json.loads(p.read_text())["status"] == "ok"]
        return done[0] if done else None

    first = sweep.wait_for(a_finished_trial, "no trial finished")
    before = first.read_text()
    sweep.interrupt()
    finished_before = len([r for r in results_records(sweep.out) if r["status"] == "ok"])
    assert finished_before < 5  # it really was interrupted
    old, sweep.out = sweep.out, tmp_path / "moved"
    old.rename(sweep.out)  # moved mid-search: it resumes where it is now
    first = sweep.out / first.relative_to(old)
    resumed = sweep.resume()
    assert not old.exists()
    assert "Failed to fetch" not in resumed.stderr  # Tune's chatter on restoring goes to the sweep's tune.log
    records = results_records(sweep.out)
    search = [r for r in records if r["stage"] == "search"]
    final = [r for r in records if r["stage"] == "final"]
    assert len(search) == 3 and len({json.dumps(r["params"], sort_keys=True) for r in search}) == 3
    assert sorted(r["seed"] for r in final) == [0, 1]
    assert all(r["status"] == "ok" for r in records)
    assert first.read_text() == before  # the trial finished before the interruption was not re-run
    from mrfbench.optuna_search import told_trials

    study = optuna.load_study(study_name="sweep-gmrf", storage=f"sqlite:///{sweep.out / 'optuna.db'}")
    assert told_trials(study) == len(study.trials) == 3  # the moved study went on, under the name it began with


@pytest.mark.slow
def test_reproduce_quick_writes_its_leaderboard_apart_from_the_reference(local_ray, tmp_path, monkeypatch):
    """The README's main command, wired end to end on a tiny budget (the real one takes minutes), run from
    a folder holding reference leaderboards: they stay byte-identical, the sweep keeps its own."""
    from typer.testing import CliRunner

    from mrfbench import cli

    tiny = {k: v for k, v in TINY.items() if k not in ("trials", "search_eval_options", "cpus_per_trial", "epochs")}
    monkeypatch.setitem(get_benchmark("copula").budgets, "quick",
                        budget_file(tmp_path, "copula_quick", {**tiny, "grid": True, "seeds": 1}, epochs=1))
    reference = tmp_path / "results" / "copula"
    reference.mkdir(parents=True)
    for name in ("leaderboard.md", "leaderboard.csv"):
        (reference / name).write_text(f"the committed {name}\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.app, ["reproduce", "copula", "--models", "gmrf,mopoe"])
    assert result.exit_code == 0, result.output
    sweep_dir = tmp_path / "results" / "sweeps" / "copula-quick"
    board = (sweep_dir / "leaderboard.md").read_text()
    assert "| gmrf |" in board and "| mopoe |" in board
    records = results_records(sweep_dir)
    assert sorted(r["model"] for r in records) == ["gmrf", "mopoe"] and all(r["status"] == "ok" for r in records)
    again = CliRunner().invoke(cli.app, ["leaderboard", str(sweep_dir)])
    assert again.exit_code == 0, again.output
    for name in ("leaderboard.md", "leaderboard.csv"):  # the reference leaderboards are left alone
        assert (reference / name).read_text() == f"the committed {name}\n"
    assert oct((sweep_dir / "leaderboard.md").stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    published = CliRunner().invoke(cli.app, ["leaderboard", str(sweep_dir), "--publish", "results"])
    assert published.exit_code == 0 and (reference / "leaderboard.md").read_text() == board  # only when asked


@pytest.mark.slow
def test_reproduce_on_images_prepares_the_build_once_and_writes_table_4(local_ray, tmp_path, monkeypatch):
    """reproduce mnist3 on a build the test makes: classifiers trained before the trials, an image
    leaderboard with the paper's Table 4 beside ours, a clear error for a --data-dir without a build."""
    import numpy as np
    from typer.testing import CliRunner

    from mrfbench import cli
    from mrfbench.datasets.mnist import MNIST
    from mrfbench.datasets.polymnist import build

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 400)
    images = rng.integers(0, 60, (400, 28, 28)).astype(np.uint8)
    for k in range(10):
        images[labels == k, 2 + 2 * k : 4 + 2 * k, 4:24] = 250
    build("mnist3", MNIST(images[:300], labels[:300], images[300:], labels[300:], "synthetic", "0" * 64),
          tmp_path / "build", seed=0)
    tiny = {"dataset_options": {"n_train": 64, "n_val": 50, "n_test": 40}, "eval_options": {"n_image_tuples": 40},
            "seeds": 1, "models": ["gmrf"], "grid": True}
    monkeypatch.setitem(get_benchmark("mnist3").budgets, "quick", budget_file(tmp_path, "mnist3_quick", tiny, epochs=1))
    result = CliRunner().invoke(cli.app, ["reproduce", "mnist3", "--data-dir", str(tmp_path / "build"),
                                          "--out", str(tmp_path / "sweeps" / "mnist3-quick"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "build" / "classifiers" / "accuracy.json").exists()
    board = (tmp_path / "sweeps" / "mnist3-quick" / "leaderboard.md").read_text()
    assert "| gmrf |" in board and "(0.94, " in board and "coherence ceiling" in board  # Table 4's GMRF row
    [record] = results_records(tmp_path / "sweeps" / "mnist3-quick")
    assert record["status"] == "ok" and 0 <= record["metrics"]["conditional/coherence"] <= 1
    missing = CliRunner().invoke(cli.app, ["reproduce", "mnist3", "--data-dir", str(tmp_path / "nothing"),
                                           "--out", str(tmp_path / "other")])
    assert missing.exit_code == 2 and "--data-dir" in missing.stderr and "Traceback" not in missing.output


def test_grid_jobs_take_every_model_in_turn():
    from mrfbench.sweeps import interleave

    jobs = interleave({"a": [{"beta": 1}, {"beta": 2}, {"beta": 3}], "b": [{"beta": 1}]})
    assert jobs == [("a", {"beta": 1}), ("b", {"beta": 1}), ("a", {"beta": 2}), ("a", {"beta": 3})]


@pytest.mark.slow
def test_the_dashboard_lists_running_trials_by_name(tmp_path):
    """`sweep --dashboard` prints the URL before the trials start; the dashboard's API, asked over loopback
    with the cluster's token while a trial runs, lists that trial's actor by its readable name and the sweep's
    driver as a job named after the sweep."""
    import secrets
    import urllib.request

    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_TOKEN": token, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "mrfbench", "sweep", "--out", str(tmp_path / "sweep"), "--space",
                             "copula_quick", "--models", "gmrf", "--grid", "--epochs", "60", "--seeds", "1",
                             "--n-train", "2000", "--n-unconditional", "5000", "--dashboard", "--device", "cpu"],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            assert line, "the sweep ended before printing the dashboard's URL"
            url = next((word for word in line.split() if word.startswith("http://")), None)
        request = urllib.request.Request(f"{url}/api/v0/actors?limit=100&detail=true",
                                         headers={"Authorization": f"Bearer {token}"})
        names, deadline = set(), time.time() + 240
        while "gmrf final seed 0" not in names and time.time() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    actors = json.load(answer)["data"]["result"]["result"]
                names = {actor.get("repr_name") for actor in actors}
            except OSError:
                pass  # the dashboard is still starting
            time.sleep(0.5)
        assert "gmrf final seed 0" in names, names
        jobs = urllib.request.Request(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(jobs, timeout=10) as answer:
            listed = json.load(answer)
        assert {"job_name": "mrfbench sweep sweep", "sweep_folder": str(tmp_path / "sweep")} in [
            job.get("metadata") for job in listed]  # the Jobs page names the sweep
        rest, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, rest[-2000:]
    finally:
        try:  # anything of this sweep still alive (never `ray stop`, which would stop every Ray here)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_new_sweep_on_a_folder_holding_another_is_refused_and_the_same_one_resumed(tmp_path):
    settings = SweepSettings(out=str(tmp_path), space="copula_quick", models=["gmrf"], grid=True, **{**TINY, "seeds": 1})
    (tmp_path / SWEEP_FILE).write_text(json.dumps(dataclasses.asdict(settings)))
    before = (tmp_path / SWEEP_FILE).read_bytes()
    other = dataclasses.replace(settings, models=["mopoe"])
    with pytest.raises(UsageError, match="already holds another sweep"):
        Sweep.start(other)
    assert (tmp_path / SWEEP_FILE).read_bytes() == before
    assert Sweep.start(dataclasses.replace(settings)).out == tmp_path.resolve()


def test_a_moved_sweep_continues_where_it_is_under_the_name_it_began_with(tmp_path):
    settings = SweepSettings(out=str(tmp_path / "old"), space="copula_quick", models=["gmrf"], grid=True)
    moved = tmp_path / "new"
    moved.mkdir()
    (moved / SWEEP_FILE).write_text(json.dumps({k: v for k, v in dataclasses.asdict(settings).items() if k != "name"}))
    resumed = Sweep.resume(moved)  # a sweep.json from before sweeps recorded their name: its folder's then
    assert resumed.out == moved.resolve() and resumed.settings.name == "old" and not (tmp_path / "old").exists()
    assert Sweep(SweepSettings(out=str(tmp_path / "fresh"), space="copula_quick")).settings.name == "fresh"


def recorded_sweep(out, space: str, **options) -> SweepSettings:
    """A sweep folder as `sweep` leaves it before Ray starts: its settings, with the space's YAML."""
    settings = Sweep(SweepSettings(out=str(out), space=space, **options)).settings
    out.mkdir(parents=True, exist_ok=True)
    (out / SWEEP_FILE).write_text(json.dumps(dataclasses.asdict(settings)))
    return settings


def test_a_sweep_reads_the_space_it_started_with_from_any_folder(tmp_path, monkeypatch):
    space = tmp_path / "spaces" / "tiny.yaml"
    space.parent.mkdir()
    space.write_text("dataset: copula\nepochs: 2\nmodels:\n  gmrf:\n")
    monkeypatch.chdir(tmp_path)
    recorded_sweep(tmp_path / "SW", "spaces/tiny.yaml", grid=True)
    space.write_text("dataset: copula\nepochs: 7\nmodels:\n  gmrf:\n")
    monkeypatch.chdir(space.parent)
    assert Sweep.resume(tmp_path / "SW").space.epochs == 2  # neither the relative path nor the edit matters
    assert read_trials(tmp_path / "SW")[0] == "copula"  # the leaderboard reads the recorded space too
    with pytest.raises(UsageError, match="started with another search space"):
        Sweep.resume(tmp_path / "SW", given={"space": str(space)})


def test_resume_refuses_settings_other_than_the_recorded_ones(tmp_path):
    from typer.testing import CliRunner

    from mrfbench.cli import app

    recorded_sweep(tmp_path / "SW", "copula_quick", grid=True, epochs=2)
    before = (tmp_path / "SW" / SWEEP_FILE).read_bytes()
    for extra, named in ((["--epochs", "3"], "epochs"), (["--n-train", "99"], "n-train"),
                         (["--space", "copula_paper"], "search space"), (["--no-packs"], "packs")):
        result = CliRunner().invoke(app, ["sweep", "--out", str(tmp_path / "SW"), "--resume", *extra])
        assert result.exit_code == 2 and f"started with another {named}" in result.stderr, result.output
    reproduce = CliRunner().invoke(app, ["reproduce", "copula", "--budget", "paper", "--out", str(tmp_path / "SW")])
    assert reproduce.exit_code == 2 and "started with another search space" in reproduce.stderr
    assert (tmp_path / "SW" / SWEEP_FILE).read_bytes() == before
    assert Sweep.resume(tmp_path / "SW", given={"epochs": 2, "space": "copula_quick"}).settings.epochs == 2


def test_a_second_writer_of_a_sweep_folder_is_refused(tmp_path):
    from typer.testing import CliRunner

    from mrfbench.cli import app

    settings = recorded_sweep(tmp_path / "SW", "copula_quick", grid=True)
    with Sweep(settings).writing():
        result = CliRunner().invoke(app, ["sweep", "--out", str(tmp_path / "SW"), "--resume"])
    assert result.exit_code == 2 and "another mrfbench process is running the sweep" in result.stderr
    with Sweep(settings).writing():  # released when the first writer ends
        pass


def test_a_trial_larger_than_every_node_is_refused_before_the_sweep_starts(local_ray, tmp_path):
    sweep = Sweep(SweepSettings(out=str(tmp_path / "SW"), space="copula_quick", grid=True, cpus_per_trial=3))
    with pytest.raises(UsageError, match="--cpus-per-trial 3 is more than any node of the Ray cluster has \\(2 CPUs\\)"):
        with sweep.writing():
            sweep.connect()
    assert not (tmp_path / "SW").exists()  # nothing left of a sweep that never started


@pytest.mark.slow
def test_a_trial_whose_worker_is_killed_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path):
    sweep = SweepProcess(tmp_path, "trials=1, seeds=1, epochs=60")

    def running_trial():
        found = [json.loads(p.read_text()) for p in sweep.out.glob("search-gmrf/*/trial.json")]
        return found[0] if found and found[0]["status"] == "running" and "pid" in found[0] else None

    os.kill(sweep.wait_for(running_trial, "no trial started")["pid"], signal.SIGKILL)  # as the OOM killer would
    assert sweep.proc.wait(timeout=300) == 0  # not an interrupt
    (record,) = results_records(sweep.out)
    assert record["status"] == "failed" and record["error"].startswith("its worker process died")
    assert "\n" not in record["error"]


def test_a_storage_that_cannot_work_is_refused_before_ray_starts(tmp_path):
    """A damaged optuna.db on --resume, a PostgreSQL URL without its driver and a SQLite file in a missing
    folder each failed after Ray had started, with the guard's bare exception and not the file's name."""
    settings = SweepSettings(out=str(tmp_path / "s"), space="copula_quick", grid=True)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / SWEEP_FILE).write_text(json.dumps(dataclasses.asdict(settings)))
    (tmp_path / "s" / "optuna.db").write_bytes(b"not a database, half written" * 100)
    with pytest.raises(UsageError, match=r"the Optuna storage .*optuna.db cannot be read \(file is not a database\)"):
        Sweep.resume(tmp_path / "s")
    import importlib.util

    if importlib.util.find_spec("pg8000") is None:  # a PostgreSQL driver SQLAlchemy knows, not installed here
        with pytest.raises(UsageError, match=r"pg8000://u:\*\*\*@db/x: its database driver is not installed"):
            Sweep(SweepSettings(out=str(tmp_path / "p"), space="copula_quick", storage="postgresql+pg8000://u:pw@db/x"))
    with pytest.raises(UsageError, match="the folder .*/absent does not exist"):
        Sweep(SweepSettings(out=str(tmp_path / "q"), space="copula_quick", storage=f"sqlite:///{tmp_path}/absent/o.db"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


@pytest.mark.slow
def test_a_sweep_killed_and_resumed_against_postgresql_loses_no_trial(tmp_path, postgres_url):
    import optuna

    sweep = SweepProcess(tmp_path, f"trials=3, seeds=2, epochs=1, max_concurrent_trials=1, storage={postgres_url!r}")
    sweep.wait_for(lambda: any(json.loads(p.read_text())["status"] == "ok"
                               for p in sweep.out.glob("search-gmrf/*/trial.json")), "no trial finished")
    sweep.interrupt(signal.SIGKILL)
    sweep.resume()
    records = results_records(sweep.out)
    search = [r for r in records if r["stage"] == "search"]
    assert len(search) == 3 and all(r["status"] == "ok" for r in records) and len(records) == 5
    study = optuna.load_study(study_name="sweep-gmrf", storage=postgres_url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3  # each recorded trial told once (one the kill cut off may stay RUNNING)
    searched = list(complete[0].params)  # the study's trials are the recorded ones
    assert sorted(json.dumps(t.params, sort_keys=True) for t in complete) == sorted(
        json.dumps({k: r["params"][k] for k in searched}, sort_keys=True) for r in search)
    assert not (tmp_path / "sweep" / "optuna.db").exists()
    assert not [p for p in sweep.out.rglob("*") if is_staging(p)]  # no run half written by the killed sweep


@pytest.mark.slow
def test_two_sweeps_share_one_postgresql_storage_at_once(tmp_path, postgres_url):
    import optuna

    settings = f"trials=2, seeds=1, epochs=1, max_concurrent_trials=1, storage={postgres_url!r}"
    sweeps = [SweepProcess(tmp_path, settings, name) for name in ("first", "second")]
    for sweep in sweeps:
        sweep.finish()
    for sweep in sweeps:
        assert len([r for r in results_records(sweep.out) if r["status"] == "ok"]) == 3
        study = optuna.load_study(study_name=f"{sweep.out.name}-gmrf", storage=postgres_url)
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert set(optuna.get_all_study_names(postgres_url)) >= {"first-gmrf", "second-gmrf", "first-final", "second-final"}


@pytest.mark.slow
def test_a_killed_driver_leaves_no_ray_process_of_its_own(tmp_path):
    """Ray's dashboard and runtime-env agents outlived a sweep driver killed with kill -9 by minutes; its
    watchdog now ends every process the driver started within seconds (and nothing else), and removes the
    copies of its trials that Tune staged in the Ray session."""
    from mrfbench.sweeps.reaper import descendants

    sweep = SweepProcess(tmp_path, "trials=1, seeds=1, epochs=200")
    try:
        started = sweep.wait_for(lambda: len(descendants(sweep.proc.pid)) >= 6 and descendants(sweep.proc.pid),
                                 "Ray did not start")
        [record] = sweep.wait_for(lambda: list(sweep.out.glob("search-gmrf/*/trial.json")), "no trial started")
        ray_temp = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
        copies = sweep.wait_for(lambda: list(ray_temp.glob(f"session_*/artifacts/*/search-gmrf/*/{record.parent.name}")),
                                "Tune staged no copy of the trial")
        ours = {**started, **descendants(sweep.proc.pid)}
        os.kill(sweep.proc.pid, signal.SIGKILL)  # the driver alone, as the out-of-memory killer would
        sweep.proc.wait(timeout=10)

        def running(pid: int, start: int) -> bool:  # the same process (not a reused PID), not a zombie
            try:
                state, *fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return False
            return state != "Z" and fields[18] == str(start)

        sweep.wait_for(lambda: not any(running(*p) for p in ours.items()), "a process outlived the driver by 30 s",
                       seconds=30)
        sweep.wait_for(lambda: not any(p.exists() for p in copies), "Tune's copy of a trial outlived the driver",
                       seconds=10)  # the Ray session's artifacts go with it
    finally:
        with contextlib.suppress(ProcessLookupError):
            sweep.interrupt(signal.SIGKILL)
