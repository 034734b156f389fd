"""Metropolis-within-Gibbs sampling of an energy-based (MRF) latent law, vectorised over chains."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

import mrfbench.models.latent.noise as noise
from mrfbench.models.latent.gaussian import block_indices

LOG_STEP_BOUNDS = (math.log(1e-4), math.log(10.0))  # adapted steps stay finite on flat or sharp energies


@dataclass
class MHSettings:
    burn_in: int = 200  # sweeps discarded (the step sizes adapt during them)
    thin: int = 5  # sweeps between kept states
    step: float = 0.5  # initial proposal standard deviation
    target_accept: float = 0.35  # per-block acceptance the burn-in adapts the step towards


@dataclass
class MHResult:
    samples: torch.Tensor  # (chains, kept, D)
    acceptance: torch.Tensor  # mean acceptance of the proposals after burn-in (0-d, on the chains' device)
    steps: torch.Tensor  # final step size per updated block


@torch.no_grad()
def metropolis_within_gibbs(
    energy: Callable[[torch.Tensor, int], torch.Tensor], init: torch.Tensor, blocks: Sequence[int], block_dim: int,
    n_keep: int, settings: MHSettings, steps: Sequence[float] | torch.Tensor | None = None,
) -> MHResult:
    """Sample p(z) proportional to exp(-energy(z)) with random-walk proposals that update one block of
    ``block_dim`` coordinates at a time (the blocks not listed stay fixed: conditional sampling).

    ``energy(z, b)`` (C, D) -> (C,) may return only the terms that involve block b (an MRF's local energy),
    since only differences under a change of block b matter; the full energy is also valid.
    ``init`` (C, D) starts C independent chains; each sweep updates every listed block once, accepting
    z' = z + step_b eps with probability min(1, exp(energy(z) - energy(z'))). During the ``burn_in`` sweeps
    each block's step is adapted (log step += acceptance - target); afterwards it is fixed, so the kept
    states (every ``thin``-th sweep, ``n_keep`` per chain) come from a valid Metropolis-Hastings chain.
    ``steps`` (one per listed block) starts from earlier step sizes instead of ``settings.step``: persistent
    chains carry theirs from call to call. Nothing waits on the device: the acceptance and the steps come
    back as tensors."""
    z = init.clone()
    idx = [block_indices([b], block_dim, z.device) for b in blocks]
    start = steps if steps is not None else [settings.step] * len(blocks)
    # adapted on the device: no host sync per update
    log_step = list(torch.as_tensor(start, dtype=torch.float32, device=z.device).log().unbind())
    kept, accepted, proposed = [], torch.zeros((), device=z.device), 0
    for sweep in range(settings.burn_in + n_keep * settings.thin):
        for k, coords in enumerate(idx):
            proposal = z.clone()
            proposal[:, coords] += log_step[k].exp() * noise.normal_like(z[:, coords])
            e_old, e_new = energy(z, blocks[k]), energy(proposal, blocks[k])
            accept = noise.uniform_like(e_old).log() < (e_old - e_new)
            z = torch.where(accept[:, None], proposal, z)
            rate = accept.float().mean()
            if sweep < settings.burn_in:
                log_step[k] = (log_step[k] + rate - settings.target_accept).clamp(*LOG_STEP_BOUNDS)
            else:
                accepted, proposed = accepted + rate, proposed + 1
        if sweep >= settings.burn_in and (sweep - settings.burn_in + 1) % settings.thin == 0:
            kept.append(z)
    return MHResult(torch.stack(kept, 1), accepted / max(proposed, 1), torch.stack(log_step).exp())
