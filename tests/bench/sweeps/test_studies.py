"""The final stage's Optuna study: named objective, real distributions, every trial told."""

import json

import optuna

from mrfbench.sweeps.studies import distribution, record_final_study


def test_parameters_get_the_distributions_their_values_have():
    assert distribution([1e-4, 1e-3, 1e-2]) == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert distribution([0.1, 0.5]) == optuna.distributions.FloatDistribution(0.1, 0.5)
    assert distribution([64, 128]) == optuna.distributions.IntDistribution(64, 128)
    assert distribution(["gaussian", "laplace"]) == optuna.distributions.CategoricalDistribution(["gaussian", "laplace"])
    assert distribution([1.0]) == optuna.distributions.CategoricalDistribution([1.0])


def test_the_final_study_holds_every_final_trial_with_its_score_and_figures(tmp_path):
    for i, (beta, seed, status) in enumerate([(1e-3, 0, "ok"), (1e-1, 0, "ok"), (1e-1, 1, "failed")]):
        folder = tmp_path / "final" / f"t{i}"
        folder.mkdir(parents=True)
        metrics = {"score": 1.0 + i, "unconditional/wasserstein_mean": 2.0 + i} if status == "ok" else None
        (folder / "trial.json").write_text(json.dumps({"model": "gmrf", "params": {"beta": beta, "epochs": 2}, "seed": seed,
                                                       "stage": "final", "status": status, "metrics": metrics}))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    record_final_study(tmp_path, storage, "sw-final")
    record_final_study(tmp_path, storage, "sw-final")  # rewritten, not appended to
    study = optuna.load_study(study_name="sw-final", storage=storage)
    assert study.metric_names == ["score"] and study.user_attrs["sweep"] == str(tmp_path.resolve())
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL"] and trials[0].value == 1.0
    assert trials[0].distributions["beta"] == optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
    assert trials[1].user_attrs["unconditional/wasserstein_mean"] == 3.0 and trials[2].user_attrs["seed"] == 1
