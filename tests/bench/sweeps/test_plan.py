"""Every sweep mode as a plan, checked without Ray or torch."""

import subprocess
import sys

import pytest

from mrfbench.spaces import load_space
from mrfbench.sweeps.plan import Job, Stage, final_jobs, interleave, longest_first, plan
from mrfbench.sweeps.settings import SweepSettings

SPACE = load_space("copula")  # searched ranges for every model


def settings(**options) -> SweepSettings:
    return SweepSettings(out="unused", space="copula", **{"models": ["gmrf", "mvae"], "trials": 5, "seeds": 3, **options})


def test_search_then_each_best_config_over_the_seeds_as_one_pack():
    assert plan(settings(packs=True), SPACE) == [Stage("search-gmrf", "search", ("gmrf",), "search", 5, 5, pack_size=4),
                                                 Stage("search-mvae", "search", ("mvae",), "search", 5, 5, pack_size=4),
                                                 Stage("final", "final", ("gmrf", "mvae"), "best", 2, 6)]
    assert [s.split for s in plan(settings(), SPACE)] == ["val", "val", "test"]


def test_without_packs_a_trial_per_seed():
    assert plan(settings(packs=False), SPACE)[-1].trials == 6
    assert plan(settings(packs=True, seeds=1), SPACE)[-1].trials == 2  # one seed: nothing to pack


@pytest.mark.parametrize("options, packed", [({}, False), ({"gpus_per_trial": 0.5}, True), ({"packs": True}, True),
                                             ({"packs": False, "gpus_per_trial": 1}, False)])
def test_unasked_a_sweep_packs_where_its_trials_have_gpus_and_not_on_cpus(options, packed):
    """On CPUs a pack trains slower than its runs one after another (README "Packed training")."""
    assert settings(**options).packing is packed
    assert plan(settings(**options), SPACE)[-1].trials == (2 if packed else 6)


def test_learning_curves_train_every_run_alone():
    """A curve scores one run's weights as it trains, so no stage packs."""
    stages = plan(settings(packs=True, score_every=5), SPACE)
    assert [s.pack_size for s in stages] == [1, 1, 1] and stages[-1].trials == 6


def test_asha_stops_the_search_stages_only():
    stages = plan(settings(asha=True), SPACE)
    assert [s.asha for s in stages] == [True, True, False]


@pytest.mark.parametrize("options, size", [({"packs": True}, 4), ({"gpus_per_trial": 0.5}, 5), ({"trials": 40, "gpus_per_trial": 1}, 32),
                                           ({"packs": True, "pack_size": 2}, 2), ({"gpus_per_trial": 1, "asha": True}, 1),
                                           ({"gpus_per_trial": 1, "packs": False}, 1), ({}, 1)])
def test_a_search_asks_optuna_for_a_pack_at_a_time_by_device_unless_asha_stops_trials(options, size):
    """Four at a time on CPUs with --packs, 32 with GPUs (never more than the trials); one with --asha or
    without packs."""
    assert plan(settings(**options), SPACE)[0].pack_size == size


@pytest.mark.parametrize("options, error", [({"pack_size": 0}, "--pack-size must be >= 1"),
                                            ({"pack_size": 3, "packs": True, "asha": True}, "ASHA stops one at a time"),
                                            ({"pack_size": 3, "packs": False}, "--no-packs does not"),
                                            ({"pack_size": 3}, "on CPUs does not unless asked: add --packs"),
                                            ({"pack_size": 3, "packs": True, "score_every": 2}, "scores one run at a time"),
                                            ({"score_every": 0}, "--score-every must be >= 1")])
def test_a_pack_size_the_search_cannot_use_is_refused(options, error):
    from mrfbench.errors import UsageError

    with pytest.raises(UsageError, match=error):
        settings(**options).validate(SPACE)


def test_a_grid_runs_every_point_over_the_seeds_and_searches_nothing():
    space = load_space("copula_variants")
    models = list(space.params)
    stages = plan(SweepSettings(out="unused", space="copula_variants", grid=True, seeds=3), space)
    configs = sum(len(space.grid(m)) for m in models)
    assert stages == [Stage("final", "final", tuple(models), "grid", 3 * configs, 3 * configs)]  # a trial per run on CPUs


def test_the_grid_sampler_searches_each_grid_point_once(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text("dataset: copula\nepochs: 1\nseeds: 2\nparams:\n  beta: {grid: [1.0, 0.5, 0.1]}\n"
                          "models:\n  gmrf: {}\n  mopoe: {beta: 1.0}\n")
    space = load_space(str(space_file))
    stages = plan(SweepSettings(out="unused", space=str(space_file), sampler="grid"), space)
    assert [(s.name, s.trials) for s in stages] == [("search-gmrf", 3), ("final", 4)]  # mopoe: nothing to search


def test_models_added_on_resume_get_their_searches_and_a_final_stage_of_their_own():
    stages = plan(settings(added_models=[["nnmrf", "almrf"]]), SPACE)
    assert [s.name for s in stages] == ["search-gmrf", "search-mvae", "final", "search-nnmrf", "search-almrf",
                                        "final-nnmrf-almrf"]
    assert stages[-1].models == ("nnmrf", "almrf") and stages[-1].source == "best"


def test_final_jobs_pack_the_seeds_of_each_config_or_list_them_seed_by_seed():
    configs = [("gmrf", {"beta": 1.0}), ("mvae", {"beta": 0.1})]
    assert final_jobs(configs, 3, packs=True) == [Job("gmrf", {"beta": 1.0}, (0, 1, 2)), Job("mvae", {"beta": 0.1}, (0, 1, 2))]
    unpacked = final_jobs(configs, 2, packs=False)
    assert [(j.model, j.seeds) for j in unpacked] == [("gmrf", (0,)), ("mvae", (0,)), ("gmrf", (1,)), ("mvae", (1,))]
    assert not unpacked[0].packed and final_jobs(configs, 3, packs=True)[0].packed


def test_interleave_takes_each_models_points_in_turn():
    grids = {"a": [{"x": 1}, {"x": 2}, {"x": 3}], "b": [{"y": 1}]}
    assert interleave(grids) == [("a", {"x": 1}), ("b", {"y": 1}), ("a", {"x": 2}), ("a", {"x": 3})]


@pytest.mark.parametrize("module", ["mrfbench.sweeps.plan"])
def test_the_plan_imports_neither_ray_nor_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def shipped_budgets() -> list[tuple[str, str]]:
    from mrfbench.datasets import BENCHMARKS

    return [(name, budget) for name, spec in BENCHMARKS.items() for budget in spec.budgets]


@pytest.mark.parametrize("dataset, budget", shipped_budgets())
def test_every_shipped_budget_is_a_plan_of_its_models(dataset, budget):
    """`reproduce DATASET --budget B` reads its space's sweep: section as the sweep's settings."""
    from mrfbench.datasets.spec import budget_space

    space = load_space(budget_space(dataset, budget))
    stages = plan(SweepSettings(out="unused", space=space.name, **space.sweep), space)
    assert space.dataset == dataset and {m for s in stages for m in s.models} == set(space.params)
    assert all(s.runs >= s.trials >= 1 for s in stages)


def test_each_round_of_configs_starts_its_longest_model_first():
    """Each model's i-th config in turn (``interleave``), a round's models by their epoch time, longest first:
    a stopped grid has still covered every model's first values."""
    grids = {"gmrf": [{"beta": 1}, {"beta": 2}], "nnmrf": [{"beta": 1}, {"beta": 2}], "mvae": [{"beta": 1}]}
    ordered = longest_first(interleave(grids), {"gmrf": 1.0, "nnmrf": 5.0, "mvae": 2.0})
    assert ordered == [("nnmrf", {"beta": 1}), ("mvae", {"beta": 1}), ("gmrf", {"beta": 1}),
                       ("nnmrf", {"beta": 2}), ("gmrf", {"beta": 2})]
    assert longest_first(interleave(grids), {}) == interleave(grids)  # nothing measured: the order as it was
