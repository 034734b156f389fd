import math

import optuna

from mrfbench.optuna_search import RecordingOptunaSearch, told_trials


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


def packed_search(tmp_path, n_trials=6, pack_size=4, start=None):
    from mrfbench.optuna_search import PackedOptunaSearch

    space = {"beta": optuna.distributions.FloatDistribution(0.1, 2.0, log=True),
             "latent_dim": optuna.distributions.CategoricalDistribution([2, 3])}
    return PackedOptunaSearch(space, {"hidden": 16}, n_trials, pack_size, optuna.samplers.RandomSampler(seed=0),
                              f"sqlite:///{tmp_path / 'optuna.db'}", "packed", start)


def test_a_packed_search_asks_a_round_at_a_time_and_packs_the_trials_of_one_shape(tmp_path):
    search = packed_search(tmp_path)
    suggestions = [search.suggest("t0")]
    assert search.asked == 4  # the first round: four asked at once
    while (config := search.suggest(f"t{len(suggestions)}")) != "FINISHED":
        suggestions.append(config)
    members = [c["trial"]["pack_trials"] if "trial" in c else [{"params": c}] for c in suggestions]
    assert sum(map(len, members)) == 6 and search.asked == 6 and any(len(pack) > 1 for pack in members)
    assert all(len({m["params"]["latent_dim"] for m in pack}) == 1 for pack in members)  # one shape a pack
    for i, config in enumerate(suggestions):  # each member told its own score; a NaN member failed
        numbers = search.packs[f"t{i}"]
        scores = {f"member_scores/optuna{n}": (math.nan if n == 5 else float(n)) for n in numbers}
        search.on_trial_complete(f"t{i}", {"score": 0.0, **scores} if len(numbers) > 1 else
                                 {"score": math.nan if numbers[0] == 5 else float(numbers[0])})
    trials = search.study.get_trials()
    assert [t.value for t in trials[:5]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert trials[5].state == optuna.trial.TrialState.FAIL and told_trials(search.study) == 6


def test_a_packed_search_restored_elsewhere_goes_on_in_its_own_study(tmp_path):
    """Tune restores a searcher from the checkpoint its sweep saved; a sweep moved (or copied) since goes on
    in the study where the sweep now lies, never in the one it was saved beside."""
    import shutil

    (tmp_path / "old").mkdir()
    search = packed_search(tmp_path / "old", n_trials=3, pack_size=2, start={"beta": 0.7, "latent_dim": 3})
    first = search.suggest("a")
    params = [m["params"] for m in first["trial"]["pack_trials"]] if "trial" in first else [first]
    assert params[0] == {"beta": 0.7, "latent_dim": 3}
    search.save(str(tmp_path / "searcher.pkl"))
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    before = (tmp_path / "old" / "optuna.db").read_bytes()
    restored = packed_search(tmp_path / "new", n_trials=3, pack_size=2)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.asked == 2 and restored.packs == search.packs and restored.sampler is restored.study.sampler
    restored.on_trial_complete("a", {"score": 1.0, **{f"member_scores/optuna{n}": 1.0 for n in search.packs["a"]}})
    assert told_trials(restored.study) == len(search.packs["a"])
    restored.on_trial_complete("a", {"score": 1.0})  # told again on a resumed run: left alone
    while restored.suggest(f"t{restored.asked}") != "FINISHED":
        pass
    assert restored.asked == 3 and len(restored.study.trials) == 3
    assert (tmp_path / "old" / "optuna.db").read_bytes() == before


def test_a_search_restored_elsewhere_goes_on_in_its_own_study(tmp_path):
    import shutil

    def search(folder):
        return RecordingOptunaSearch(space={"beta": optuna.distributions.FloatDistribution(0.1, 2.0)}, metric="score",
                                     mode="min", sampler=optuna.samplers.RandomSampler(seed=0), study_name="s",
                                     storage=optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}"))

    (tmp_path / "old").mkdir()
    first = search(tmp_path / "old")
    first.suggest("a")
    first.save(str(tmp_path / "searcher.pkl"))
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    before = (tmp_path / "old" / "optuna.db").read_bytes()
    restored = search(tmp_path / "new")
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("a", {"score": 2.0})
    restored.suggest("b")
    (a, b) = restored._ot_study.trials
    assert a.value == 2.0 and b.state == optuna.trial.TrialState.RUNNING
    assert (tmp_path / "old" / "optuna.db").read_bytes() == before
