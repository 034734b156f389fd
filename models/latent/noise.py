"""Every random draw of a model's training objective goes through here, so that a pack of models (trained as
one stacked model under ``torch.func.vmap``) can give each member the very draws its own single run makes.

Outside a pack the draws come from torch's global generators, exactly as ``torch.randn`` and the
distributions' ``rsample`` take them. A pack first records which draws one step makes (``recording``: kind,
shape, dtype, device), then before each step draws them for every member from that member's own generators
(``draw_tape``) and replays them inside the vmapped step (``replaying``), in the order the model asks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace

import torch
from torch.distributions import Distribution, Laplace, Normal


@dataclass(frozen=True)
class Draw:
    """One draw a step makes: ``kind`` (normal, uniform, exponential or permutation), shape, dtype, device
    and the bounds of a uniform."""

    kind: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    bounds: tuple[float, float] = (0.0, 1.0)


class _Recorder(list):
    pass


class _Tape:
    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.tensors, self.position = list(tensors), 0


_active: ContextVar[_Recorder | _Tape | None] = ContextVar("noise_tape", default=None)


def _generate(draw: Draw, generator: torch.Generator | None = None) -> torch.Tensor:
    if draw.kind == "permutation":
        return torch.randperm(draw.shape[0], generator=generator, device=draw.device)
    out = torch.empty(draw.shape, dtype=draw.dtype, device=draw.device)
    if draw.kind == "normal":
        return out.normal_(generator=generator)
    if draw.kind == "uniform":
        return out.uniform_(*draw.bounds, generator=generator)
    return out.exponential_(generator=generator)


def _take(draw: Draw) -> torch.Tensor:
    active = _active.get()
    if isinstance(active, _Tape):
        if active.position >= len(active.tensors):
            raise RuntimeError(f"the pack's step drew more than its {len(active.tensors)} recorded draws")
        out = active.tensors[active.position]
        active.position += 1
        if tuple(out.shape) != draw.shape:
            raise RuntimeError(f"the pack's step drew {draw.kind} {draw.shape} where it had recorded {tuple(out.shape)}: "
                               "this model's draws depend on its data, so it cannot train as a pack")
        return out
    if isinstance(active, _Recorder):
        active.append(draw)
    return _generate(draw)


def normal(shape: Sequence[int], dtype: torch.dtype, device) -> torch.Tensor:
    """Standard normal draws (``torch.randn``)."""
    return _take(Draw("normal", tuple(shape), dtype, torch.device(device)))


def normal_like(like: torch.Tensor) -> torch.Tensor:
    return normal(like.shape, like.dtype, like.device)


def uniform(shape: Sequence[int], dtype: torch.dtype, device, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Uniform draws on [low, high) (``torch.rand`` for the defaults)."""
    return _take(Draw("uniform", tuple(shape), dtype, torch.device(device), (low, high)))


def uniform_like(like: torch.Tensor) -> torch.Tensor:
    return uniform(like.shape, like.dtype, like.device)


def exponential(shape: Sequence[int], dtype: torch.dtype, device) -> torch.Tensor:
    """Exp(1) draws."""
    return _take(Draw("exponential", tuple(shape), dtype, torch.device(device)))


def permutation(n: int, device="cpu") -> torch.Tensor:
    """A random permutation of 0..n-1 (``torch.randperm``)."""
    return _take(Draw("permutation", (n,), torch.int64, torch.device(device)))


def rsample(dist: Distribution, sample_shape: Sequence[int] = ()) -> torch.Tensor:
    """``dist.rsample(sample_shape)`` of a Normal or Laplace, with its noise drawn here (the same draws)."""
    shape = dist._extended_shape(torch.Size(sample_shape))
    if isinstance(dist, Normal):
        return dist.loc + normal(shape, dist.loc.dtype, dist.loc.device) * dist.scale
    if isinstance(dist, Laplace):
        u = uniform(shape, dist.loc.dtype, dist.loc.device, torch.finfo(dist.loc.dtype).eps - 1, 1)
        return dist.loc - dist.scale * u.sign() * torch.log1p(-u.abs())
    raise TypeError(f"no reparameterised draw for {type(dist).__name__}")


@contextlib.contextmanager
def recording() -> Iterator[list[Draw]]:
    """Record the draws made inside (they still come from the global generators)."""
    recorder = _Recorder()
    token = _active.set(recorder)
    try:
        yield recorder
    finally:
        _active.reset(token)


@contextlib.contextmanager
def replaying(tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    """Hand out ``tensors`` in order as the draws made inside; all of them must be taken."""
    tape = _Tape(tensors)
    token = _active.set(tape)
    try:
        yield
    finally:
        _active.reset(token)
    if tape.position != len(tape.tensors):
        raise RuntimeError(f"the pack's step took {tape.position} of its {len(tape.tensors)} recorded draws")


def draw_tape(draws: Sequence[Draw], generators: Sequence[dict[str, torch.Generator]]) -> list[torch.Tensor]:
    """The recorded ``draws`` for each member, from its generators (one per device type; a generator on another
    device draws there, and the draw is moved), stacked: each (K, *shape)."""
    tape = []
    for draw in draws:
        members = [(member[draw.device.type], draw) for member in generators]
        tape.append(torch.stack([_generate(replace(d, device=g.device), g).to(d.device, non_blocking=True)
                                 for g, d in members]))
    return tape
