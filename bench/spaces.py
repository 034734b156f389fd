"""Search spaces: YAML files (shipped ones by name, or a path) validated on load, with errors naming the key."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from mrfbench.datasets import BENCHMARKS
from mrfbench.errors import UsageError
from mrfbench.models import MODELS
from mrfbench.training import TrainConfig

KINDS = ("loguniform", "uniform", "int", "choice", "grid")
TRAIN_KEYS = ("lr", "batch_size", "lr_schedule", "kl_warmup", "precision")


@dataclass(frozen=True)
class Param:
    """One searched or fixed parameter: kind is 'fixed' or one of KINDS."""

    name: str
    kind: str
    values: tuple

    def optuna_distribution(self):
        """The parameter as an Optuna distribution (Optuna is imported here: training and aggregating runs
        need no Optuna)."""
        import optuna

        if self.kind == "loguniform":
            return optuna.distributions.FloatDistribution(*self.values, log=True)
        if self.kind == "uniform":
            return optuna.distributions.FloatDistribution(*self.values)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(*self.values)
        return optuna.distributions.CategoricalDistribution(self.values)


@dataclass
class SearchSpace:
    name: str
    dataset: str
    epochs: int
    seeds: int
    params: dict[str, dict[str, Param]] = field(default_factory=dict)  # per model
    sweep: dict[str, Any] = field(default_factory=dict)  # sweep settings a reproduce budget runs it with
    start: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model, the search's first point
    text: str = field(default="", repr=False)  # the YAML it was read from (a sweep keeps it in sweep.json)

    def fixed(self, model: str) -> dict[str, Any]:
        return {p.name: p.values[0] for p in self.params[model].values() if p.kind == "fixed"}

    def searched(self, model: str) -> dict[str, Param]:
        return {p.name: p for p in self.params[model].values() if p.kind != "fixed"}

    def grid_size(self, model: str) -> int:
        """How many points ``grid(model)`` has, without listing them (a clear error for ranges, which a grid
        cannot enumerate)."""
        searched = self.searched(model)
        ranged = [p.name for p in searched.values() if p.kind not in ("grid", "choice")]
        if ranged:
            raise UsageError(f"space '{self.name}': a grid (--grid, --sampler grid) needs grid or choice values, "
                             f"not ranges for {', '.join(ranged)}")
        return math.prod(len(p.values) for p in searched.values())

    def grid(self, model: str) -> list[dict[str, Any]]:
        """Every combination of the model's parameters for --grid (searched ranges are not allowed)."""
        self.grid_size(model)
        searched = self.searched(model)
        names = list(searched)
        combos = itertools.product(*(searched[n].values for n in names))
        return [{**self.fixed(model), **dict(zip(names, combo))} for combo in combos]


def _parse_param(where: str, name: str, spec: Any) -> Param:
    if not isinstance(spec, dict):
        return Param(name, "fixed", (spec,))
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise UsageError(f"{where}.{name}: expected a value or one of {{{', '.join(KINDS)}: ...}}, got {spec}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise UsageError(f"{where}.{name}.{kind}: expected a non-empty list, got {values!r}")
    if kind in ("loguniform", "uniform", "int"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise UsageError(f"{where}.{name}.{kind}: expected [low, high] numbers, got {values}")
        if not values[0] < values[1]:
            raise UsageError(f"{where}.{name}.{kind}: low must be < high, got {values}")
        if kind == "loguniform" and values[0] <= 0:
            raise UsageError(f"{where}.{name}.loguniform: low must be > 0, got {values[0]}")
        if kind == "int" and not all(isinstance(v, int) for v in values):
            raise UsageError(f"{where}.{name}.int: bounds must be integers, got {values}")
    return Param(name, kind, tuple(values))


def _check_values(where: str, model: str, params: dict[str, Param]) -> None:
    """Validate the parameters against the model's config and the training config."""
    config_cls = MODELS[model].config_class
    allowed = {f.name for f in dataclasses.fields(config_cls)} - {"n_modalities", "modality_dim"}
    for name, param in params.items():
        if name not in allowed and name not in TRAIN_KEYS:
            raise UsageError(f"{where}.{name}: model '{model}' has no such option; valid: "
                             f"{', '.join(sorted(allowed | set(TRAIN_KEYS)))}")
        if name == "beta" and any(isinstance(v, (int, float)) and v <= 0 for v in param.values):
            raise UsageError(f"{where}.beta: beta must be > 0, got {list(param.values)}")
    # every value of every parameter (grid points, choices, both ends of a range), each beside the first
    # values of the others, must make valid model and training configs: nothing fails only once trials run
    first = {name: p.values[0] for name, p in params.items()}
    for name, param in params.items():
        for value in param.values:
            trial = {**first, name: value}
            try:
                config_cls(**{k: v for k, v in trial.items() if k not in TRAIN_KEYS})
                TrainConfig(**{k: v for k, v in trial.items() if k in TRAIN_KEYS})
            except (UsageError, TypeError) as err:
                raise UsageError(f"{where}.{name} = {value!r}: {err}") from None


SWEEP_KEYS = ("grid", "sampler", "trials", "asha", "seeds", "models", "dataset_options", "eval_options",
              "search_eval_options", "max_concurrent_trials", "score_every")


def _sweep_settings(label: str, sweep: Any) -> dict[str, Any]:
    """The ``sweep:`` section: the settings `mrfbench reproduce` runs the space with (a budget as data)."""
    if not isinstance(sweep, dict):
        raise UsageError(f"search space {label}: sweep must be a mapping of sweep settings")
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise UsageError(f"search space {label}: sweep: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(SWEEP_KEYS)}")
    return dict(sweep)


def _check_start(where: str, start: Any, searched: dict[str, Param]) -> dict[str, Any]:
    """A search's first point: a value for every searched parameter, each inside its choices or range."""
    if not isinstance(start, dict) or set(start) != set(searched):
        raise UsageError(f"{where}: give a value for each searched parameter ({', '.join(sorted(searched))})")
    for name, value in start.items():
        param = searched[name]
        inside = (param.values[0] <= value <= param.values[1] if param.kind in ("loguniform", "uniform", "int")
                  else value in param.values)
        if not inside:
            raise UsageError(f"{where}.{name} = {value!r} is outside its {param.kind} {list(param.values)}")
    return dict(start)


class _Loader(yaml.SafeLoader):
    """YAML as people write it: 1e-3 is a number (as in YAML 1.2, not a string as in 1.1), and a key given
    twice in one mapping is an error rather than the last one silently winning."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = [str(loader.construct_object(key, deep=True)) for key, _ in node.value]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise yaml.constructor.ConstructorError(None, None, f"key '{twice[0]}' given twice", node.start_mark)
    return loader.construct_mapping(node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str):
    """``text`` as YAML (see ``_Loader``); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_Loader)


def _read_space_file(path: Path) -> str:
    if not path.exists():
        raise UsageError(f"search space file {path} does not exist")
    if not path.is_file():
        raise UsageError(f"search space {path} is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"search space {path} is not UTF-8 text") from None
    except OSError as err:
        raise UsageError(f"cannot read search space {path}: {err.strerror or err}") from None


def load_space(name_or_path: str) -> SearchSpace:
    """Load a shipped space by name (e.g. 'copula') or a YAML file by path, validating every key."""
    return parse_space(*_space_text(name_or_path))


def _space_text(name_or_path: str) -> tuple[str, str]:
    """The YAML text of a shipped space or a file, and its label (the name, or the path as given)."""
    path = Path(name_or_path)
    resource = files("mrfbench.search_spaces").joinpath(f"{name_or_path}.yaml")
    if path.suffix not in (".yaml", ".yml") and "/" not in name_or_path and resource.is_file():
        text, label = resource.read_text(), name_or_path  # a shipped space, whatever the working folder holds
    elif path.exists() or path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        text, label = _read_space_file(path), str(path)
    else:
        shipped = sorted(p.name[:-5] for p in files("mrfbench.search_spaces").iterdir() if p.name.endswith(".yaml"))
        raise UsageError(f"unknown search space '{name_or_path}'; shipped: {', '.join(shipped)} (or give a .yaml path)")
    return text, label


def parse_space(text: str, label: str) -> SearchSpace:
    """The space the YAML ``text`` describes (``label`` names it in errors and tables)."""
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as err:
        raise UsageError(f"search space {label} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"search space {label}: expected a mapping at the top level")
    unknown = sorted(set(raw) - {"dataset", "epochs", "seeds", "params", "models", "sweep"})
    if unknown:
        raise UsageError(f"search space {label}: unknown key(s) {', '.join(unknown)}")
    for key in ("dataset", "models"):
        if key not in raw:
            raise UsageError(f"search space {label}: missing key '{key}'")
    if raw["dataset"] not in BENCHMARKS:
        raise UsageError(f"search space {label}: dataset: unknown data set '{raw['dataset']}'; valid: {', '.join(BENCHMARKS)}")
    for key in ("epochs", "seeds"):
        value = raw.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"search space {label}: {key} must be an integer >= 1, got {raw.get(key)!r}")
    if not isinstance(raw["models"], dict) or not raw["models"]:
        raise UsageError(f"search space {label}: models must map model names to their parameters")
    common = raw.get("params") or {}
    if not isinstance(common, dict):
        raise UsageError(f"search space {label}: params must be a mapping")
    space = SearchSpace(label, raw["dataset"], raw.get("epochs", 200), raw.get("seeds", 3),
                        sweep=_sweep_settings(label, raw.get("sweep") or {}), text=text)
    for model, own in raw["models"].items():
        if model not in MODELS:
            raise UsageError(f"search space {label}: models.{model}: unknown model; valid: {', '.join(sorted(MODELS))}")
        if own is not None and not isinstance(own, dict):
            raise UsageError(f"search space {label}: models.{model} must be a mapping")
        own = dict(own or {})
        start = own.pop("start", None)
        merged = {name: _parse_param(f"{label}: params", name, spec) for name, spec in common.items()}
        merged.update({name: _parse_param(f"{label}: models.{model}", name, spec) for name, spec in own.items()})
        _check_values(f"search space {label}: models.{model}", model, merged)
        space.params[model] = merged
        if start is not None:
            space.start[model] = _check_start(f"search space {label}: models.{model}.start", start, space.searched(model))
    return space
