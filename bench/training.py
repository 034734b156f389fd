"""Model-agnostic training loop: it calls ``model.loss`` and knows nothing else about the model."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from mrfbench.errors import UsageError, bounded, check_fields
from mrfbench.models import MultimodalVAE


@dataclass
class TrainConfig:
    epochs: int = bounded(200, ge=1)
    batch_size: int = bounded(256, ge=1)
    lr: float = bounded(1e-3, gt=0, label="learning rate")
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    seed: int = 0
    device: str = "auto"
    kl_warmup: float = bounded(0.1, ge=0, lt=1, label="KL warm-up fraction")  # beta ramps linearly from 0 to
    # its value over this fraction of the steps
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: the training step under bfloat16 autocast

    def __post_init__(self):
        check_fields(self)


@dataclass
class TrainResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; asking for an absent CUDA is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UsageError(f"unknown device '{name}'; use auto, cpu or cuda[:N]")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device '{name}' requested but CUDA is not available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run trains at on ``device``: bf16 where the device computes bfloat16 natively (a GPU
    that supports it; a CPU whose oneDNN kernels do, AVX-512 and up), else fp32, with a line saying so: an
    AVX2 CPU emulates bfloat16 products, about 85x slower than fp32 (a 3 x 256 x 1,024 x 1,024 batched
    product, one thread: 1.7 s against 20 ms)."""
    if precision != "bf16" or native_bf16(device):
        return precision
    which = f"CPU ({torch.backends.cpu.get_cpu_capability()})" if device.type == "cpu" else f"GPU ({device})"
    print(f"--precision bf16: this {which} has no native bfloat16, so the run trains in fp32 (its config.json "
          "says so)", file=sys.stderr, flush=True)
    return "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 products at hardware speed."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def forked_rng(device: torch.device):
    """torch's random state on the CPU and, for a CUDA ``device``, on it, restored on leaving."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def seed_everything(seed: int) -> None:
    """Seed torch, whose generator every model draw uses (data and evaluation take their own seeded
    NumPy generators), so a CPU run is reproducible bit for bit."""
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate_loss(model: MultimodalVAE, data: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Per-example mean of the loss and its terms over ``data``."""
    model.eval()
    totals: dict[str, float] = {}
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        out = model.loss(batch)  # the full objective (no warm-up)
        for key, value in {"loss": out.loss, **out.terms}.items():
            totals[key] = totals.get(key, 0.0) + float(value) * len(batch)
    return {key: value / len(data) for key, value in totals.items()}


def _step_loss(model: MultimodalVAE, batch: torch.Tensor, epoch: int, beta_scale: float, precision: str) -> torch.Tensor:
    """The batch's loss (under bfloat16 autocast with ``precision="bf16"``)."""
    with _numerical_failure(model, epoch), torch.autocast(batch.device.type, dtype=torch.bfloat16,
                                                          enabled=precision == "bf16"):
        return model.loss(batch, beta_scale).loss


@contextlib.contextmanager
def _numerical_failure(model: MultimodalVAE, epoch: int):
    """A distribution refusing non-finite parameters (the weights, or what they compute, overflowed) is the
    run's numerical failure, a ``FloatingPointError`` with a one-line reason."""
    try:
        yield
    except ValueError as err:
        if not all(p.isfinite().all() for p in model.parameters()):
            raise FloatingPointError(f"non-finite model parameters at epoch {epoch}") from err
        if "found invalid values" in str(err):
            raise FloatingPointError(f"the model computed non-finite values at epoch {epoch} (it diverged; a "
                                     "lower learning rate may hold it)") from err
        raise


def adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam updating every parameter in one fused kernel on CPU and CUDA (the copula GMRF's 22 tensors:
    0.5 ms a step on a CPU thread against 2.2 ms for the foreach path, which loops over tensors there; the
    same update to float rounding, 3e-8 after a step), the per-parameter loop on other devices."""
    parameters = list(parameters)
    fused = parameters[0].device.type in ("cpu", "cuda")
    return torch.optim.Adam(parameters, lr=lr, fused=fused or None)


Snapshot = Callable[[], dict]  # the whole training state after an epoch, on demand (see ``train``)


def train(
    model: MultimodalVAE,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    config: TrainConfig,
    on_epoch: Callable[[int, dict[str, float], Snapshot], None] | None = None,
    resume: dict | None = None,
    figures: Callable[[int], dict[str, float]] | None = None,
) -> TrainResult:
    """Adam on ``model.loss`` with shuffled mini-batches; validates each epoch and keeps the best state.

    Data and model must already be on the target device. A non-finite loss raises ``FloatingPointError``
    so a caller (a sweep) can record the run as failed with that reason. After each epoch ``on_epoch`` gets
    the epoch, its record and a snapshot function: the state it returns (model, optimiser, schedule, random
    states, history, best checkpoint; save it at once, it holds the live tensors), given back as ``resume``,
    continues the run where it was, the same step for step on a CPU (the NN-MRF's adapted Metropolis-Hastings
    step sizes, kept outside its state, start again from their initial value). ``figures(epoch)``, where
    given, adds scores of the current weights to the epoch's record (a learning curve; empty: none this epoch).
    """
    optimizer = adam(model.parameters(), config.lr)
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        if config.lr_schedule == "cosine"
        else None
    )
    generator = torch.Generator().manual_seed(config.seed)
    warmup_steps = round(config.kl_warmup * config.epochs * steps_per_epoch)
    step, first_epoch, elapsed = 0, 1, 0.0
    result = TrainResult(best_state={}, best_epoch=-1, best_val_loss=math.inf)
    if resume is not None:
        step, first_epoch, elapsed = resume["step"], resume["epoch"] + 1, resume["wall_time_s"]
        _restore(resume, model, optimizer, scheduler, generator, result)
    start_time = time.perf_counter() - elapsed
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train_data), generator=generator).to(train_data.device)
        total = torch.zeros((), dtype=torch.float64, device=train_data.device)  # read once an epoch: no step waits
        for start in range(0, len(train_data), config.batch_size):
            batch = train_data[order[start : start + config.batch_size]]
            beta_scale = min(1.0, step / warmup_steps) if warmup_steps else 1.0
            step += 1
            loss = _step_loss(model, batch, epoch, beta_scale, config.precision)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.detach() * len(batch)
        if not math.isfinite(total.item()):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}")
        with _numerical_failure(model, epoch):
            val = evaluate_loss(model, val_data, max(config.batch_size, 1024))
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": total.item() / len(train_data),
                  **{f"val_{k}": v for k, v in val.items()}, **(figures(epoch) if figures is not None else {})}
        result.history.append(record)
        if val["loss"] < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val["loss"], epoch
            result.best_state = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            snapshot = functools.partial(_snapshot, epoch, step, time.perf_counter() - start_time, model, optimizer,
                                         scheduler, generator, result)
            on_epoch(epoch, record, snapshot)
    result.wall_time_s = time.perf_counter() - start_time
    return result


def _snapshot(epoch, step, wall_time_s, model, optimizer, scheduler, generator, result) -> dict:
    """What ``train`` needs to continue after ``epoch``."""
    cuda = next(model.parameters()).device.type == "cuda"
    return {"epoch": epoch, "step": step, "wall_time_s": wall_time_s, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": None if scheduler is None else scheduler.state_dict(),
            "order_rng": generator.get_state(), "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
            "history": list(result.history), "best_state": result.best_state, "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss}


def _restore(state: dict, model, optimizer, scheduler, generator, result: TrainResult) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["order_rng"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    result.history = list(state["history"])
    result.best_state, result.best_epoch, result.best_val_loss = (state["best_state"], state["best_epoch"],
                                                                  state["best_val_loss"])
