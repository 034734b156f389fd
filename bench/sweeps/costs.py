"""What a training tuple costs each model of a stage, measured on the driver before the stage starts, so
that the stage can start its longest jobs first (``plan.longest_first``): the stage's models share its
data set and epochs, so their time per training tuple orders them as their runs' times do."""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from mrfbench.datasets import get_benchmark
from mrfbench.errors import first_line
from mrfbench.experiment import model_for_data
from mrfbench.spaces import TRAIN_KEYS
from mrfbench.training import TrainConfig, adam

TIMED_STEPS = 3
FEW = {"n_train": 512, "n_val": 1, "n_test": 1}  # the data set's sizes where it has them: a batch is all it takes


def tuple_seconds(dataset_name: str, dataset_options: dict, configs: dict[str, dict]) -> tuple[dict[str, float], list[str]]:
    """Per model of ``configs`` (model -> its parameters), the seconds a training step takes over its batch
    size, on this process's CPU threads (the median of ``TIMED_STEPS`` steps after an untimed one); and, for
    a model that could not be timed, why (it is left out: its order is then its own). The caller's random
    state is left as it was."""
    spec = get_benchmark(dataset_name)
    sizes = {f.name for f in dataclasses.fields(spec.config)}
    dataset = spec.make(**{**dataset_options, **{k: v for k, v in FEW.items() if k in sizes}})
    data = dataset.splits()["train"]
    seconds, skipped = {}, []
    with torch.random.fork_rng(devices=[]):
        for model_name, params in configs.items():
            try:
                train = TrainConfig(**{k: v for k, v in params.items() if k in TRAIN_KEYS})
                model = model_for_data(model_name, {k: v for k, v in params.items() if k not in TRAIN_KEYS}, spec, dataset)
                batch = data[: train.batch_size]
                seconds[model_name] = _step_seconds(model, batch, train) / len(batch)
            except Exception as err:  # noqa: BLE001 - an order is a convenience: a model it cannot time keeps its place
                skipped.append(f"{model_name} ({type(err).__name__}: {first_line(err)})")
    return seconds, skipped


def _step_seconds(model, batch: torch.Tensor, train: TrainConfig) -> float:
    optimizer = adam(model.parameters(), train.lr)

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=train.precision == "bf16"):
            loss = model.loss(batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    step()
    return statistics.median(step() for _ in range(TIMED_STEPS))
