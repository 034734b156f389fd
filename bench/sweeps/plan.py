"""What a sweep runs, decided apart from running it (as syne-tune keeps its scheduler apart from its backend):
the stages in order, where each stage's configs come from and how they become jobs. Pure Python, no Ray and
no torch: every sweep mode is a plan a test checks in milliseconds; ``driver.py`` runs a plan through Ray
Tune. A job is one Tune trial: one config over one seed, or over several seeds as one pack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Job:
    """One trial of a stage: a model at fixed parameters, over one seed or over several as one pack."""

    model: str
    params: dict
    seeds: tuple[int, ...]

    @property
    def packed(self) -> bool:
        return len(self.seeds) > 1


@dataclass(frozen=True)
class Stage:
    """A Tune experiment of the sweep. ``source``: where its configs come from: Optuna's suggestions
    ("search", on seed 0, scored on the validation split), the space's grid ("grid"), or each model's best
    searched config ("best"); the final stages are scored on the test split."""

    name: str  # its Tune experiment: search-<model>, final, final-<added models>
    kind: Literal["search", "final"]
    models: tuple[str, ...]
    source: Literal["search", "grid", "best"]
    trials: int  # the Tune trials it runs (at most: a model whose every search trial failed has no final job)
    asha: bool = False  # a search stage stopped early by ASHA

    @property
    def split(self) -> str:
        return "val" if self.kind == "search" else "test"


def plan(settings, space) -> list[Stage]:
    """The stages of a sweep with ``settings`` over ``space``, in the order they run: for each group of
    models (those it started with, then each set added on --resume), the search of each searched model and
    then the group's final stage; with --grid, the group's grid x seeds alone."""
    seeds = settings.seeds or space.seeds
    per_config = 1 if packs_seeds(settings.packs, seeds) else seeds
    stages = []
    started, *added = settings.model_groups(space)
    for name, models in [("final", started), *((f"final-{'-'.join(group)}", group) for group in added)]:
        if settings.grid:
            stages.append(Stage(name, "final", tuple(models), "grid", per_config * sum(space.grid_size(m) for m in models)))
            continue
        for model in models:
            if space.searched(model):
                trials = space.grid_size(model) if settings.sampler == "grid" else settings.trials
                stages.append(Stage(f"search-{model}", "search", (model,), "search", trials, settings.asha))
        stages.append(Stage(name, "final", tuple(models), "best", per_config * len(models)))
    return stages


def packs_seeds(packs: bool, seeds: int) -> bool:
    """Whether a final config's seeds train as one pack: asked for, and more than one seed."""
    return packs and seeds > 1


def final_jobs(configs: list[tuple[str, dict]], seeds: int, packs: bool) -> list[Job]:
    """The jobs of a final stage: each (model, params) config over seeds 0..seeds-1, as one pack or a job per
    seed (seed by seed, each seed's configs together)."""
    if packs_seeds(packs, seeds):
        return [Job(model, dict(params), tuple(range(seeds))) for model, params in configs]
    return [Job(model, dict(params), (seed,)) for seed in range(seeds) for model, params in configs]


def interleave(grids: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    """(model, params) configs taking each model's i-th grid point in turn, so a sweep stopped early (or still
    running) has covered every model, at the first values of each grid, rather than the first models."""
    depth = max((len(grid) for grid in grids.values()), default=0)
    return [(model, grid[i]) for i in range(depth) for model, grid in grids.items() if i < len(grid)]
