"""Packed training: K trials of one model variant train as one stacked model (``torch.func.vmap`` over a
leading member dimension), each member with its own initialisation, data, order, random draws, beta,
learning rate, schedule and KL warm-up, so that member k trains as the single run of its settings would
(the same initial weights, batches and draws; updates equal to float rounding).

Each parameter of the members is stacked into one (K, *shape) tensor: a step is one vmapped forward and
backward per chunk of members (all of them, or as many as the device runs well at once:
``pack_sizing.pack_chunk``) and one fused Adam update per distinct learning rate. A member whose training loss
turns non-finite fails alone: it is frozen at its best state and the others go on."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch.func import functional_call, vmap

from mrfbench.models import MultimodalVAE
from mrfbench.models.latent import noise
from mrfbench.training import TrainConfig, TrainResult, forked_rng

ADAM = (0.9, 0.999, 1e-8)  # torch.optim.Adam's defaults, which single runs use


@dataclass
class MemberResult(TrainResult):
    """What a member's training gives, as a single run's ``TrainResult``, and why it failed if it did."""

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


def member_generators(seed: int, cpu_state: torch.Tensor, device: torch.device,
                      host_draws: bool = False) -> dict[str, torch.Generator]:
    """A member's generators: the CPU one in ``cpu_state`` (torch's global state after its model was built),
    and on CUDA one seeded as ``torch.manual_seed(seed)`` seeds the device's, so that the member draws as its
    single run on that device would; with ``host_draws`` its CUDA draws come from the CPU generator too (the
    draws of its CPU run, moved to the device: a pack on a GPU that reproduces CPU runs)."""
    cpu = torch.Generator()
    cpu.set_state(cpu_state)
    generators = {"cpu": cpu}
    if device.type == "cuda":
        generators["cuda"] = cpu if host_draws else torch.Generator(device=device).manual_seed(seed)
    return generators


def sampler_state(model: MultimodalVAE) -> list[str]:
    """The buffers a training step changes in place (a module's ``sampler_state``), by full name."""
    return [f"{prefix}.{name}".lstrip(".") for prefix, module in model.named_modules()
            for name in getattr(module, "sampler_state", ())]


class StackedParameters:
    """The parameters of K models of one architecture, each stacked over a leading member dimension
    (K, *shape) as a leaf tensor of its own."""

    def __init__(self, models: Sequence[MultimodalVAE]):
        with torch.no_grad():
            self.stacked = {name: torch.stack([m.get_parameter(name) for m in models]).requires_grad_()
                            for name, _ in models[0].named_parameters()}

    def member(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters by name (views)."""
        return {name: value[k] for name, value in self.stacked.items()}

    @torch.no_grad()
    def member_state(self, model: MultimodalVAE, k: int) -> dict[str, torch.Tensor]:
        """Member k's state dict (parameters from the stack, buffers from ``model``, its own model), as copies;
        ``model`` is left holding that state."""
        for name, value in self.member(k).items():
            model.get_parameter(name).copy_(value)
        return copy.deepcopy(model.state_dict())

    @torch.no_grad()
    def load_member(self, model: MultimodalVAE, k: int) -> None:
        """Put ``model``'s parameters into member k's place in the stack."""
        for name, value in self.member(k).items():
            value.copy_(model.get_parameter(name))


class PackAdam:
    """Adam over stacked parameters with a learning rate per member: torch's fused update (the kernel single
    runs use), one call for all members that share this step's learning rate; members not ``active`` are
    left as they are."""

    def __init__(self, stacked: Sequence[torch.Tensor]):
        self.params = list(stacked)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), device=self.params[0].device) for _ in range(len(self.params[0]))]

    @torch.no_grad()
    def step(self, grads: Sequence[Sequence[torch.Tensor]], lrs: Sequence[float], active: Sequence[bool]) -> None:
        """Update with ``grads``: for each parameter, each member's gradient (``grads[j][k]``, a stacked
        (K, *shape) tensor or a list of K tensors)."""
        beta1, beta2, eps = ADAM
        groups: dict[float, list[int]] = {}
        for k, (lr, on) in enumerate(zip(lrs, active)):
            if on:
                groups.setdefault(lr, []).append(k)
        for lr, rows in groups.items():
            rows_of = lambda tensors: [t[k] for t in tensors for k in rows]  # noqa: E731
            steps = [self.steps[k] for _ in self.params for k in rows]
            torch._foreach_add_([self.steps[k] for k in rows], 1)
            torch._fused_adam_(rows_of(self.params), rows_of(grads), rows_of(self.exp_avg),
                               rows_of(self.exp_avg_sq), [], steps, lr=lr, beta1=beta1, beta2=beta2,
                               weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)


def schedule_factor(schedule: str, done: int, total: int) -> float:
    """The learning rate's fraction of its base after ``done`` of ``total`` steps (CosineAnnealingLR's
    closed form, or constant)."""
    return (1 + math.cos(math.pi * done / total)) / 2 if schedule == "cosine" else 1.0


class Pack:
    """K built models of one variant, trained as one: ``template`` runs every member's step under vmap."""

    def __init__(self, models: Sequence[MultimodalVAE], members: Sequence[TrainConfig], generators: Sequence[dict],
                 chunk: int | None = None):
        self.models, self.members, self.generators = list(models), list(members), list(generators)
        self.chunk = min(chunk or len(self.models), len(self.models))  # members per vmapped forward and backward
        self.template = copy.deepcopy(models[0])
        self.template.config = replace(self.template.config, beta=1.0)  # each member's beta comes as beta_scale
        self.betas = torch.tensor([m.config.beta for m in models], dtype=torch.float64)
        self.params = StackedParameters(models)
        self.state = {name: torch.stack([m.get_buffer(name) for m in models]) for name in sampler_state(models[0])}
        self._draws: dict[tuple, list[noise.Draw]] = {}

    def __len__(self) -> int:
        return len(self.models)

    def chunks(self) -> list[slice]:
        """The members' rows, ``chunk`` at a time."""
        return [slice(start, min(start + self.chunk, len(self))) for start in range(0, len(self), self.chunk)]

    def _member_loss(self, params, state, x, beta, tape):
        with noise.replaying(tape):
            out = functional_call(self.template, {**params, **state}, (x,), {"beta_scale": beta})
        return out.loss, out.terms

    def _recorded_draws(self, x: torch.Tensor, beta: torch.Tensor) -> list[noise.Draw]:
        """The draws a step on batches shaped like x (K, B, ...) makes, learned once per batch size and mode
        from member 0 on a copy of the model (its sampler state untouched), the generators untouched."""
        key = (tuple(x.shape[1:]), torch.is_grad_enabled(), self.template.training)
        if key not in self._draws:
            probe = copy.deepcopy(self.template)
            with forked_rng(x.device), noise.recording() as draws, torch.set_grad_enabled(key[1]):
                state = {name: value[0].clone() for name, value in self.state.items()}
                params = {name: value.detach() for name, value in self.params.member(0).items()}
                functional_call(probe, {**params, **state}, (x[0],),
                                {"beta_scale": beta[0]})
            self._draws[key] = list(draws)
        return self._draws[key]

    def losses(self, x: torch.Tensor, beta: torch.Tensor, precision: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every member's loss (K,) and terms on its batch x (K, B, ...) with KL weights ``beta`` (K,), its
        random draws from its own generators; a chunk of members at a time."""
        parts = [self.chunk_losses(rows, x[rows], beta[rows], precision) for rows in self.chunks()]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts]), {key: torch.cat([p[1][key] for p in parts]) for key in parts[0][1]}

    def chunk_losses(self, rows: slice, x: torch.Tensor, beta: torch.Tensor, precision: str,
                     params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The losses and terms of members ``rows`` on their batches x, with their stacked ``params``
        (default: theirs in the pack)."""
        params = params if params is not None else {name: value[rows] for name, value in self.params.stacked.items()}
        state = {name: value[rows] for name, value in self.state.items()}
        tape = noise.draw_tape(self._recorded_draws(x, beta), self.generators[rows])
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"), _no_validation():
            if len(x) > 1:
                return vmap(self._member_loss, randomness="error")(params, state, x, beta, tape)
            # one member: its own tensors, no vmap (the single run's arithmetic, without vmap's overhead)
            first = lambda tensors: {name: value.squeeze(0) for name, value in tensors.items()}  # noqa: E731
            loss, terms = self._member_loss(first(params), first(state), x[0], beta[0], [t[0] for t in tape])
            return loss[None], {key: value[None] for key, value in terms.items()}


class _no_validation:
    """Distributions skip their argument checks (a check is a data-dependent branch, which vmap refuses;
    a non-finite member is caught by its loss instead)."""

    def __enter__(self):
        self.previous = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(False)

    def __exit__(self, *exc):
        torch.distributions.Distribution.set_default_validate_args(self.previous)


def train_step(pack: Pack, optimizer: PackAdam, x: torch.Tensor, beta: torch.Tensor, lr: Sequence[float],
               active: Sequence[bool], precision: str) -> torch.Tensor:
    """One Adam step of every ``active`` member on its batch x (K, B, ...) with its learning rate ``lr``;
    the members' losses (K,). Each chunk of members runs its forward and backward in turn (its parameters
    as leaves of their own, views of the stack), so only one chunk's activations are held at a time; Adam
    takes each member's gradient where its chunk left it (no copy into a stack)."""
    losses, grads = [], [[] for _ in pack.params.stacked]
    for rows in pack.chunks():
        leaves = {name: value[rows].detach().requires_grad_() for name, value in pack.params.stacked.items()}
        loss, _ = pack.chunk_losses(rows, x[rows], beta[rows], precision, leaves)
        loss.sum().backward()
        losses.append(loss.detach())
        for member_grads, leaf in zip(grads, leaves.values()):
            member_grads.extend(leaf.grad.unbind())
    optimizer.step(grads, lr, active)
    return torch.cat(losses)


@torch.no_grad()
def validate(pack: Pack, data: PackData, batch_size: int) -> list[dict[str, float]]:
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
    optimizer = PackAdam(pack.params.stacked.values())
    active = [True] * k
    results = [MemberResult(best_state={}, best_epoch=-1, best_val_loss=math.inf) for _ in range(k)]
    step, start_time = 0, time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        pack.template.train()
        order = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
        total = torch.zeros(k, dtype=torch.float64, device=device)
        for start in range(0, n, config.batch_size):
            index = order[:, start : start + config.batch_size]
            scale = torch.tensor([min(1.0, step / w) if w else 1.0 for w in warmup], dtype=torch.float64)
            beta = (pack.betas * scale).to(torch.float32).to(device, non_blocking=True)
            lr = [m.lr * schedule_factor(m.lr_schedule, step, total_steps) for m in pack.members]
            step += 1
            loss = train_step(pack, optimizer, data.batch("train", index), beta, lr, active, config.precision)
            total += loss.double() * index.shape[1]
        finite = torch.isfinite(total).tolist()
        for j in range(k):
            if active[j] and not finite[j]:
                _fail(pack, results[j], j, active, f"non-finite training loss at epoch {epoch}")
        val = validate(pack, data, max(config.batch_size, 1024))
        records: list[dict | None] = [None] * k
        totals = total.tolist()
        for j in range(k):
            if not active[j]:
                continue
            if not math.isfinite(val[j]["loss"]):
                _fail(pack, results[j], j, active, f"non-finite validation loss at epoch {epoch}")
                continue
            lr_now = pack.members[j].lr * schedule_factor(pack.members[j].lr_schedule, step, total_steps)
            records[j] = {"epoch": epoch, "lr": lr_now, "train_loss": totals[j] / n,
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


def _fail(pack: Pack, result: MemberResult, k: int, active: list[bool], reason: str) -> None:
    """Freeze member k with ``reason`` at its best state, or its initial one before it had a best (finite,
    so it cannot spoil the pack's arithmetic): its model holds that state."""
    active[k] = False
    result.failure = reason
    pack.params.load_member(pack.models[k], k)
