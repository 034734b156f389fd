"""How long an epoch of each model of a stage takes, measured on the driver before the stage starts, so
that the stage can start its longest jobs first (``plan.longest_first``)."""

from __future__ import annotations

import math
import statistics
import time

import torch

from mrfbench.datasets import get_benchmark
from mrfbench.experiment import _build
from mrfbench.spaces import TRAIN_KEYS
from mrfbench.training import TrainConfig, adam

TIMED_STEPS = 3


def epoch_seconds(dataset_name: str, dataset_options: dict, configs: dict[str, dict]) -> dict[str, float]:
    """Per model of ``configs`` (model -> its parameters), the seconds of one training epoch on this
    process's threads: the median of ``TIMED_STEPS`` timed steps (after an untimed one) on a batch of the
    training split, times the split's batches. The caller's random state is left as it was."""
    spec = get_benchmark(dataset_name)
    dataset = spec.make(**dataset_options)
    data = dataset.splits()["train"]
    seconds = {}
    with torch.random.fork_rng():
        for model_name, params in configs.items():
            train = TrainConfig(**{k: v for k, v in params.items() if k in TRAIN_KEYS})
            model = _build(model_name, {k: v for k, v in params.items() if k not in TRAIN_KEYS}, spec, dataset)
            seconds[model_name] = _step_seconds(model, data[: train.batch_size], train) * math.ceil(len(data) / train.batch_size)
    return seconds


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
