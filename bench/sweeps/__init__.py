"""Sweeps: Ray Tune runs the trials, Optuna searches the space; every finished config is re-run over seeds.

The modules: ``settings`` (what a sweep is asked to do, checked before Ray starts), ``plan`` (its stages and
jobs, decided without Ray), ``driver`` (runs the plan through Tune and Optuna), ``trial`` (what a trial
runs), ``packs`` (a trial that trains several runs as one pack), ``cluster`` (what the sweep needs of its
Ray cluster: a node a trial fits, a sweep folder every node shares), ``costs`` (each model's time per
training tuple, so a stage starts its longest jobs first), ``studies`` (the final stage's Optuna study),
``reaper`` (the watchdog that ends the local Ray of a driver killed outright) and ``records`` (what trials
leave on disk).

A sweep directory holds ``sweep.json`` (its settings, so ``--resume`` needs nothing else), ``optuna.db``
(the Optuna studies, open it with optuna-dashboard), one Ray Tune experiment per searched model
(``search-<model>``), then one, ``final``, for every model's best config (or the grid) x seeds, so all
models share the cluster. Each trial's directory holds ``trial.json`` (model, stage, seed, parameters,
node, status and error; a search trial that ASHA stopped early has status "stopped" and the epoch it
reached) beside the run itself (``run/``: config, metrics, checkpoint, plot). With ``packs`` (the default
where trials have GPUs; on CPUs with --packs) the final stage trains each config's seeds as one pack
(``mrfbench.pack``) in one Tune trial, whose folder holds a ``seed<N>/`` per member laid out as a trial's
(``trial.json`` and ``run/``), and a search trains each round's Optuna trials of one shape as one
(``optuna<N>/`` per member); a pack interrupted midway reruns only its members without a finished
``trial.json``. Every few minutes a trial saves its training state as Tune's checkpoint (``checkpoint_*/``,
the last one kept): an interrupted sweep, resumed, continues each unfinished trial from its last state
rather than from its first epoch.
"""

import importlib

_HOMES = {  # each public name's module: imported on first use, so that ``plan`` stays free of Ray and torch
    "driver": ("Sweep", "fit_all", "require_finished", "search_scoring"),
    "plan": ("Job", "Stage", "final_jobs", "interleave", "plan"),
    "records": ("RESULTS_FILE", "TRIAL_FILE", "best_params", "mark_stopped", "results_records", "write_results_table"),
    "settings": ("SAMPLERS", "SWEEP_FILE", "SweepSettings", "check_address", "check_storage", "recorded_settings"),
    "trial": ("TrialSpec", "run_trial", "trial_dirname", "trial_name"),
}
__all__ = sorted(name for names in _HOMES.values() for name in names)


def __getattr__(name: str):
    for module, names in _HOMES.items():
        if name in names:
            return getattr(importlib.import_module(f"mrfbench.sweeps.{module}"), name)
    raise AttributeError(f"module 'mrfbench.sweeps' has no attribute '{name}'")
