"""A pack of runs end to end: each member built as its single run would be (its seed, data and model), all of
them trained as one (``mrfbench.pack``), each member's run directory written exactly as a single run writes it
(config, history, checkpoint, metrics, plots, TensorBoard curves), so ``evaluate``, ``sample`` and
``leaderboard`` read members as runs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mrfbench.datasets import get_benchmark
from mrfbench.errors import UsageError
from mrfbench.evaluate import EvalConfig
from mrfbench.experiment import check_precision, check_split, finish_run, model_for_data, run_config
from mrfbench.pack import Pack, PackData, member_generators, train_pack
from mrfbench.pack_sizing import Footprint, free_memory, pack_chunk, step_times
from mrfbench.runs import CONFIG_FILE, METRICS_FILE, Curves, staged_run, write_json
from mrfbench.training import TrainConfig, native_bf16, resolve_device, resolve_precision, seed_everything

SHARED_TRAINING = ("epochs", "batch_size", "device", "precision")  # what every member of a pack trains with
MEMBER_OPTIONS = ("beta", "lr", "lr_schedule", "kl_warmup", "seed")  # what each member of a pack sets for itself


@dataclass
class PackMember:
    """One run of a pack: where it goes and what it sets."""

    out: Path
    model_options: dict
    train: TrainConfig
    eval: EvalConfig
    dataset_options: dict


@dataclass
class MemberOutcome:
    out: Path
    metrics: dict | None = None
    failure: str | None = None


def is_finished(out: Path) -> bool:
    return (Path(out) / METRICS_FILE).exists()


def check_shared_training(members: Sequence[PackMember]) -> None:
    for name in SHARED_TRAINING:
        values = sorted({str(getattr(m.train, name)) for m in members})
        if len(values) > 1:
            raise UsageError(f"a pack's members train with one {name.replace('_', ' ')}, got {', '.join(values)}")


def pack_key(params: dict) -> str:
    """What runs with ``params`` must share to train as one pack: every parameter but ``MEMBER_OPTIONS``."""
    return json.dumps({k: v for k, v in params.items() if k not in MEMBER_OPTIONS}, sort_keys=True, default=str)


def check_stackable(models: Sequence) -> None:
    """Members may differ in beta only among model options (the others shape the tensors or the code)."""
    first = dataclasses.asdict(models[0].config)
    for model in models[1:]:
        other = dataclasses.asdict(model.config)
        differ = sorted(k for k in first if k != "beta" and first[k] != other[k])
        if differ:
            raise UsageError(f"the members differ in model option {differ[0]} ({first[differ[0]]} and {other[differ[0]]}); "
                             "a pack's members share every model option but beta: run one pack per value")


FIT = 0.8  # the share of the device's free memory a pack may plan to use


def choose_pack_size(model_name: str, dataset_name: str, member: PackMember, wanted: int, timed: bool) -> tuple[int, str]:
    """How many members of ``member``'s kind to train as one pack (at most ``wanted``), and why: as many as
    the device's free memory holds (each member's ``pack_sizing.Footprint`` on a batch of the data, its
    activations only while its chunk runs), and, when ``timed``, one if a pack of that size steps slower than
    its members one after another (``step_times``)."""
    spec = get_benchmark(dataset_name)
    dataset = spec.make(**member.dataset_options)
    device = resolve_device(member.train.device)
    model = model_for_data(model_name, member.model_options, spec, dataset).to(device)
    batch = dataset.splits()["train"][: member.train.batch_size].to(device)
    precision = member.train.precision if native_bf16(device) else "fp32"  # as run_pack will train it
    footprint = Footprint.of(model, batch, precision)
    chunk, free = footprint.chunk(device), free_memory(device)
    size = max(1, min(wanted, footprint.capacity(FIT * free, chunk)))
    at_once = "" if chunk is None or chunk >= size else f", {chunk} at a time"
    why = (f"a member takes about {footprint.state / 2**20:,.0f} + {sum(footprint.activations) / 2**20:,.0f} MiB in a step "
           f"(parameters, gradients, Adam's moments + activations{at_once}): packs of {size} need about "
           f"{footprint.pack_bytes(size, chunk) / 2**30:.2f} GiB of the {free / 2**30:.1f} GiB free")
    if timed and size > 1:
        packed, alone = step_times(model, batch, size, chunk, precision)
        why += f"; a step of {size} packed takes {1e3 * packed:.0f} ms, {size} alone {1e3 * size * alone:.0f} ms"
        if packed > size * alone:
            size, why = 1, why + ": the members train one by one"
    return size, why


def run_pack(model_name: str, dataset_name: str, members: Sequence[PackMember], overwrite: bool = False,
             eval_split: str = "test", curves: bool = False,
             on_epoch: Callable[[int, list[dict | None]], None] | None = None,
             staging: Path | None = None) -> list[MemberOutcome]:
    """Train ``members`` (one model variant; each its own seed, beta, learning rate, schedule and warm-up) as one
    pack and write each into its ``out``; a member whose training fails is recorded with its reason (its
    folder keeps its config, as a failed single run's does) and the others go on. Every input is checked, and
    every output folder claimed, before training starts. ``staging``: where the members' runs are written
    until complete (``runs.staged_run``)."""
    check_split(eval_split)
    if not members:
        raise UsageError("a pack needs at least one member")
    check_shared_training(members)
    spec = get_benchmark(dataset_name)
    check_precision(spec, model_name, members[0].train.precision)
    device = resolve_device(members[0].train.device)
    precision = resolve_precision(members[0].train.precision, device)
    members = [dataclasses.replace(m, train=dataclasses.replace(m.train, precision=precision)) for m in members]
    datasets: dict[str, object] = {}
    for member in members:
        key = json.dumps(member.dataset_options, sort_keys=True)
        if key not in datasets:
            datasets[key] = spec.make(**member.dataset_options)
    member_data = [datasets[json.dumps(m.dataset_options, sort_keys=True)] for m in members]
    models, generators = [], []
    for member, dataset in zip(members, member_data):
        seed_everything(member.train.seed)
        models.append(model_for_data(model_name, member.model_options, spec, dataset))
        generators.append(member_generators(member.train.seed, torch.get_rng_state(), device))
    check_stackable(models)
    splits = {id(d): {name: split.to(device) for name, split in d.splits().items()} for d in datasets.values()}
    with contextlib.ExitStack() as claims:
        folders = [_claim(claims, m.out, overwrite, staging) for m in members]
        configs = [run_config(model, dataset_name, data, m.train, m.eval) for model, data, m in zip(models, member_data, members)]
        for folder, config in zip(folders, configs):
            write_json(folder.work / CONFIG_FILE, config)
        train = splits[id(member_data[0])]["train"]
        pack = Pack([model.to(device) for model in models], [m.train for m in members], generators,
                    pack_chunk(models[0], train[: members[0].train.batch_size], precision))
        results = train_pack(pack, PackData.of([splits[id(d)] for d in member_data]), members[0].train, on_epoch)
        outcomes = []
        for k, (member, result) in enumerate(zip(members, results)):
            if result.failure is not None:
                folders[k].close(FloatingPointError(result.failure))
                outcomes.append(MemberOutcome(member.out, failure=result.failure))
                continue
            data = member_data[k]
            metrics = finish_run(models[k], result, configs[k], spec, data, splits[id(data)][eval_split], eval_split,
                                 member.eval, device, folders[k].work,
                                 Curves(folders[k].work, result.history) if curves else None,
                                 {"pack_members": len(members)} if len(members) > 1 else None)
            folders[k].close()
            outcomes.append(MemberOutcome(member.out, metrics=metrics))
    return outcomes


class _Claim:
    """A member's staged run directory, held open until the member is written (or has failed)."""

    def __init__(self, out: Path, overwrite: bool, staging: Path | None):
        self.context = staged_run(out, overwrite, staging)
        self.work = self.context.__enter__()
        self.open = True

    def close(self, error: BaseException | None = None) -> None:
        """Publish the member's folder: complete, or (``error``) as a failed run's."""
        if self.open:
            self.open = False
            if error is None:
                self.context.__exit__(None, None, None)
            else:
                with contextlib.suppress(type(error)):
                    self.context.__exit__(type(error), error, None)


def _claim(claims: contextlib.ExitStack, out: Path, overwrite: bool, staging: Path | None) -> _Claim:
    claim = _Claim(out, overwrite, staging)
    claims.callback(lambda: claim.close(RuntimeError("the pack was interrupted")) if claim.open else None)
    return claim


def member_grid(values: dict[str, list]) -> list[tuple[str, dict]]:
    """The cross product of the settings' values (``values``: setting -> its values, in order) as
    (folder name, settings) pairs; the name holds the settings with several values, e.g. "beta=0.1_seed=2"."""
    varying = [key for key, options in values.items() if len(options) > 1]
    grid = [{}]
    for key, options in values.items():
        grid = [{**point, key: value} for point in grid for value in options]
    return [("_".join(f"{key}={point[key]}" for key in varying), point) for point in grid]


def parse_values(text: str, kind: type, name: str) -> list:
    """A comma-separated list of values of ``kind`` ("0.1,1"): each value once, in the order given."""
    values = []
    for part in str(text).split(","):
        try:
            values.append(kind(part.strip()))
        except ValueError:
            raise UsageError(f"{name} takes {kind.__name__} values separated by commas, got '{text}'") from None
    return distinct_values(values, name)


def distinct_values(values: Sequence, name: str) -> list:
    """``values`` as a list, after checking that each is finite and given once."""
    for i, value in enumerate(values):
        shown = f"{value:g}" if isinstance(value, float) else value
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{name} must be finite, got '{shown}'")
        if value in values[:i]:
            raise UsageError(f"{name} lists {shown} twice")
    return list(values)


def planned_packs(model_name: str, dataset_name: str, members: Sequence[PackMember], overwrite: bool,
                  pack_size: int | None) -> tuple[list[list[PackMember]], str]:
    """The members still to train (every one with ``overwrite``, else those not finished) as packs of at most
    ``pack_size`` (None: as many as fit and pay, ``choose_pack_size`` timed), and why that size."""
    todo = [m for m in members if overwrite or not is_finished(m.out)]
    if not todo:
        return [], ""
    size, why = choose_pack_size(model_name, dataset_name, todo[0], min(pack_size or len(todo), len(todo)),
                                 timed=pack_size is None)
    return [todo[i : i + size] for i in range(0, len(todo), size)], why
