"""Packed training: K trials of one model variant train as one stacked model (``torch.func.vmap`` over a
leading member dimension), each member with its own initialisation, data, order, random draws, beta,
learning rate, schedule and KL warm-up, so that member k trains as the single run of its settings would
(the same initial weights, batches and draws; updates equal to float rounding).

The parameters of all members live in one (K, P) tensor: a step is one vmapped forward, one backward and
one Adam update over that tensor, whatever K. A member whose training loss turns non-finite fails alone:
it is frozen at its best state and the others go on."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch.func import functional_call, vmap

from mrfbench.models import MultimodalVAE
from mrfbench.models.latent import noise
from mrfbench.train import TrainConfig

MEMBER_FIELDS = ("seed", "lr", "lr_schedule", "kl_warmup")  # the training settings a member sets for itself
ADAM = (0.9, 0.999, 1e-8)  # torch.optim.Adam's defaults, which single runs use


@dataclass
class MemberResult:
    """What a member's training gives, as ``train.TrainResult`` does for a single run, or why it failed."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    failure: str | None = None


@dataclass
class PackData:
    """Each member's training and validation data: distinct data sets stacked once, (U, N, M, F), and the
    one each member trains on (``slots``, K)."""

    train: torch.Tensor
    val: torch.Tensor
    slots: torch.Tensor

    @classmethod
    def of(cls, splits: Sequence[dict[str, torch.Tensor]]) -> PackData:
        """From each member's splits; members that share a split object share its slot."""
        unique: dict[int, int] = {}
        slots = [unique.setdefault(id(s), len(unique)) for s in splits]
        firsts = [next(s for s, slot in zip(splits, slots) if slot == u) for u in range(len(unique))]
        return cls(torch.stack([s["train"] for s in firsts]), torch.stack([s["val"] for s in firsts]),
                   torch.as_tensor(slots, device=firsts[0]["train"].device))

    def batch(self, split: str, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (K, B) of each member's split: (K, B, M, F)."""
        data = getattr(self, split)
        return data[0][index] if len(data) == 1 else data[self.slots[:, None], index]


def member_generators(seed: int, cpu_state: torch.Tensor, device: torch.device) -> dict[str, torch.Generator]:
    """A member's generators: the CPU one in ``cpu_state`` (torch's global state after its model was built),
    and on CUDA one seeded as ``torch.manual_seed(seed)`` seeds the device's."""
    cpu = torch.Generator()
    cpu.set_state(cpu_state)
    generators = {"cpu": cpu}
    if device.type == "cuda":
        generators["cuda"] = torch.Generator(device=device).manual_seed(seed)
    return generators


def sampler_state(model: MultimodalVAE) -> list[str]:
    """The buffers a training step changes in place (a module's ``sampler_state``), by full name."""
    return [f"{prefix}.{name}".lstrip(".") for prefix, module in model.named_modules()
            for name in getattr(module, "sampler_state", ())]


class StackedParameters:
    """The parameters of K models of one architecture as one (K, P) leaf tensor, and a model's named
    parameters as views of one member's row."""

    def __init__(self, models: Sequence[MultimodalVAE]):
        named = list(models[0].named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        with torch.no_grad():
            self.flat = torch.stack([torch.cat([p.reshape(-1) for p in m.parameters()]) for m in models]).requires_grad_()

    def views(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """One member's parameters by name, as views of its row (P,)."""
        return {name: part.view(shape) for name, part, shape in zip(self.names, row.split(self.sizes), self.shapes)}

    @torch.no_grad()
    def member_state(self, model: MultimodalVAE, k: int) -> dict[str, torch.Tensor]:
        """Member k's state dict (parameters from its row, buffers from ``model``), detached copies."""
        for name, value in self.views(self.flat[k]).items():
            model.get_parameter(name).copy_(value)
        return copy.deepcopy(model.state_dict())

    @torch.no_grad()
    def load_member(self, model: MultimodalVAE, k: int, state: dict[str, torch.Tensor]) -> None:
        """Put ``state``'s parameters back into member k's row."""
        model.load_state_dict(state)
        self.flat[k] = torch.cat([p.reshape(-1) for p in model.parameters()])


class PackAdam:
    """Adam over the (K, P) stacked parameters with a learning rate per member: torch's update, once for
    all members and parameters; members not ``active`` are left as they are."""

    def __init__(self, flat: torch.Tensor):
        self.flat, self.step_count = flat, 0
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(flat), torch.zeros_like(flat)

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        beta1, beta2, eps = ADAM
        grad = torch.where(active[:, None], self.flat.grad, 0.0)
        self.step_count += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = torch.where(active, lr, 0.0) / (1 - beta1**self.step_count)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2**self.step_count)).add_(eps)
        self.flat.sub_(self.exp_avg / denom * step_size[:, None].to(self.flat.dtype))


def schedule_factor(schedule: str, done: int, total: int) -> float:
    """The learning rate's fraction of its base after ``done`` of ``total`` steps (CosineAnnealingLR's
    closed form, or constant)."""
    return (1 + math.cos(math.pi * done / total)) / 2 if schedule == "cosine" else 1.0


class Pack:
    """K built models of one variant, trained as one: ``template`` runs every member's step under vmap."""

    def __init__(self, models: Sequence[MultimodalVAE], members: Sequence[TrainConfig], generators: Sequence[dict]):
        self.models, self.members, self.generators = list(models), list(members), list(generators)
        self.template = copy.deepcopy(models[0])
        self.template.config = replace(self.template.config, beta=1.0)  # each member's beta comes as beta_scale
        self.betas = torch.tensor([m.config.beta for m in models], dtype=torch.float64)
        self.params = StackedParameters(models)
        self.state = {name: torch.stack([m.get_buffer(name) for m in models]) for name in sampler_state(models[0])}
        self._draws: dict[tuple, list[noise.Draw]] = {}

    def __len__(self) -> int:
        return len(self.models)

    def _member_loss(self, row, state, x, beta, tape):
        with noise.replaying(tape):
            out = functional_call(self.template, {**self.params.views(row), **state}, (x,), {"beta_scale": beta})
        return out.loss, out.terms

    def _recorded_draws(self, x: torch.Tensor, beta: torch.Tensor) -> list[noise.Draw]:
        """The draws a step on batches shaped like x (K, B, ...) makes, learned once per batch size and mode
        from member 0 on a copy of the model (its sampler state untouched), the generators untouched."""
        key = (tuple(x.shape[1:]), torch.is_grad_enabled(), self.template.training)
        if key not in self._draws:
            probe = copy.deepcopy(self.template)
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), noise.recording() as draws, torch.set_grad_enabled(key[1]):
                state = {name: value[0].clone() for name, value in self.state.items()}
                functional_call(probe, {**self.params.views(self.params.flat[0].detach()), **state}, (x[0],),
                                {"beta_scale": beta[0]})
            self._draws[key] = list(draws)
        return self._draws[key]

    def losses(self, x: torch.Tensor, beta: torch.Tensor, precision: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every member's loss (K,) and terms on its batch x (K, B, ...) with KL weights ``beta`` (K,), its
        random draws from its own generators."""
        draws = self._recorded_draws(x, beta)
        tape = noise.draw_tape(draws, self.generators)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"), _no_validation():
            return vmap(self._member_loss, randomness="error")(self.params.flat, self.state, x, beta, tape)


class _no_validation:
    """Distributions skip their argument checks (a check is a data-dependent branch, which vmap refuses;
    a non-finite member is caught by its loss instead)."""

    def __enter__(self):
        self.previous = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(False)

    def __exit__(self, *exc):
        torch.distributions.Distribution.set_default_validate_args(self.previous)


@torch.no_grad()
def validate(pack: Pack, data: PackData, batch_size: int, precision: str) -> list[dict[str, float]]:
    """Each member's per-example mean loss and terms on its validation split (the full beta)."""
    pack.template.eval()
    n = data.val.shape[1]
    totals: dict[str, torch.Tensor] = {}
    beta = pack.betas.to(torch.float32).to(data.val.device)
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(start + batch_size, n), device=data.val.device).expand(len(pack), -1)
        loss, terms = pack.losses(data.batch("val", index), beta, "fp32")
        for key, value in {"loss": loss, **terms}.items():
            totals[key] = totals.get(key, 0.0) + value.double() * index.shape[1]
    means = {key: (value / n).tolist() for key, value in totals.items()}
    return [{key: means[key][k] for key in means} for k in range(len(pack))]


def train_pack(pack: Pack, data: PackData, config: TrainConfig,
               on_epoch: Callable[[int, list[dict | None]], None] | None = None) -> list[MemberResult]:
    """Train every member of ``pack`` for ``config.epochs`` epochs of ``config.batch_size`` (shared), each
    with its own seed, learning rate, schedule and warm-up (``pack.members``) and beta; validate each epoch and
    keep each member's best state. ``on_epoch`` gets the epoch and each member's record (None once failed)."""
    k, n = len(pack), data.train.shape[1]
    device = data.train.device
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup = [round(m.kl_warmup * config.epochs * steps_per_epoch) for m in pack.members]
    orders = [torch.Generator().manual_seed(m.seed) for m in pack.members]
    base_lr = torch.tensor([m.lr for m in pack.members], dtype=torch.float64)
    optimizer = PackAdam(pack.params.flat)
    active = torch.ones(k, dtype=torch.bool, device=device)
    results = [MemberResult(best_state={}, best_epoch=-1, best_val_loss=math.inf) for _ in range(k)]
    step, start_time = 0, time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        pack.template.train()
        order = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
        total = torch.zeros(k, dtype=torch.float64, device=device)
        for start in range(0, n, config.batch_size):
            index = order[:, start : start + config.batch_size]
            scale = [min(1.0, step / w) if w else 1.0 for w in warmup]
            beta = (pack.betas * torch.tensor(scale, dtype=torch.float64)).to(torch.float32).to(device)
            lr = base_lr * torch.tensor([schedule_factor(m.lr_schedule, step, total_steps) for m in pack.members],
                                        dtype=torch.float64)
            step += 1
            loss, _ = pack.losses(data.batch("train", index), beta, config.precision)
            pack.params.flat.grad = None
            loss.sum().backward()
            optimizer.step(lr.to(device), active)
            total += loss.detach().double() * index.shape[1]
        finite = torch.isfinite(total).cpu()
        for j in range(k):
            if active[j] and not finite[j]:
                _fail(pack, results[j], j, active, f"non-finite training loss at epoch {epoch}")
        val = validate(pack, data, max(config.batch_size, 1024), config.precision)
        records: list[dict | None] = [None] * k
        lr_now = [m.lr * schedule_factor(m.lr_schedule, step, total_steps) for m in pack.members]
        for j in range(k):
            if not active[j]:
                continue
            if not math.isfinite(val[j]["loss"]):
                _fail(pack, results[j], j, active, f"non-finite validation loss at epoch {epoch}")
                continue
            records[j] = {"epoch": epoch, "lr": lr_now[j], "train_loss": float(total[j]) / n,
                          **{f"val_{key}": value for key, value in val[j].items()}}
            results[j].history.append(records[j])
            if val[j]["loss"] < results[j].best_val_loss:
                results[j].best_val_loss, results[j].best_epoch = val[j]["loss"], epoch
                results[j].best_state = pack.params.member_state(pack.models[j], j)
        if on_epoch is not None:
            on_epoch(epoch, records)
    for result in results:
        result.wall_time_s = time.perf_counter() - start_time
    return results


def _fail(pack: Pack, result: MemberResult, k: int, active: torch.Tensor, reason: str) -> None:
    """Freeze member k with ``reason`` at its best state, or its initial one before it had a best (finite,
    so it cannot spoil the pack's arithmetic): its model holds that state."""
    active[k] = False
    result.failure = reason
    pack.params.load_member(pack.models[k], k, pack.models[k].state_dict())
