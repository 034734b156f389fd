"""What a sweep runs, decided apart from running it (as syne-tune keeps its scheduler apart from its backend):
the stages in order, where each stage's configs come from and how they become jobs. Pure Python, no Ray and
no torch: every sweep mode is a plan a test checks in milliseconds; ``driver.py`` runs a plan through Ray
Tune. A job is one Tune trial: one config over one seed, or over several seeds as one pack."""

from __future__ import annotations

from collections.abc import Mapping
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
    trials: int  # the Tune trials it runs, at most (a model whose every search trial failed has no final job;
    # a search round's packs are fewer where its trials share their shapes)
    runs: int  # the training runs it makes, at most (a pack's members each one)
    asha: bool = False  # a search stage stopped early by ASHA
    pack_size: int = 1  # a search stage: Optuna trials asked at a time, those of one shape trained as a pack

    @property
    def split(self) -> str:
        return "val" if self.kind == "search" else "test"


def plan(settings, space) -> list[Stage]:
    """The stages of a sweep with ``settings`` over ``space``, in the order they run: for each group of
    models (those it started with, then each set added on --resume), the search of each searched model and
    then the group's final stage; with --grid, the group's grid x seeds alone."""
    seeds = settings.seeds or space.seeds
    per_config = 1 if packs_seeds(settings.packing, seeds) else seeds
    stages = []
    started, *added = settings.model_groups(space)
    for name, models in [("final", started), *((f"final-{'-'.join(group)}", group) for group in added)]:
        if settings.grid:
            configs = sum(space.grid_size(m) for m in models)
            stages.append(Stage(name, "final", tuple(models), "grid", per_config * configs, seeds * configs))
            continue
        for model in models:
            if space.searched(model):
                trials = space.grid_size(model) if settings.sampler == "grid" else settings.trials
                stages.append(Stage(f"search-{model}", "search", (model,), "search", trials, trials, settings.asha,
                                    search_pack_size(settings, trials)))
        stages.append(Stage(name, "final", tuple(models), "best", per_config * len(models), seeds * len(models)))
    return stages


SEARCH_PACK_SIZE = {"cpu": 4, "gpu": 32}  # the default --pack-size of a search, by where its trials run


def search_pack_size(settings, trials: int) -> int:
    """The Optuna trials a search asks at a time (those of one shape then train as one pack): --pack-size,
    else 4 where trials run on CPUs with --packs (TPE's first half of trials is random anyway, so asking
    for them together costs the search nothing) and 32 where they have GPUs; one (a Tune trial each)
    without packs, with --asha (whose scheduler stops trials one at a time) or learning curves (--score-every)."""
    if not settings.packing or settings.asha:
        return 1
    wanted = settings.pack_size or SEARCH_PACK_SIZE["gpu" if settings.gpus_per_trial > 0 else "cpu"]
    return max(1, min(wanted, trials))


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


def longest_first(configs: list[tuple[str, dict]], costs: Mapping[str, float]) -> list[tuple[str, dict]]:
    """``configs`` (each model's i-th config in turn, as ``interleave`` orders them) with each round's models
    ordered by their ``costs`` (time per training tuple), longest first: where a stage's jobs outnumber its
    slots, a long job started last would run alone at the end while the other slots idle. A model without a
    cost keeps its place after those with one."""
    rounds: list[list[tuple[str, dict]]] = []
    for model, params in configs:
        if not rounds or model in {m for m, _ in rounds[-1]}:
            rounds.append([])
        rounds[-1].append((model, params))
    return [config for part in rounds for config in sorted(part, key=lambda c: -costs.get(c[0], 0.0))]
