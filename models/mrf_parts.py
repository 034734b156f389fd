"""The parts the MRF MVAE family is built from (paper Sec. 3.1, Appendices A.4 and E).

A model of the family is one prior and one posterior over M latent blocks of d coordinates, with the
modality decoders on top (``MRFFamilyMVAE``). Priors: a learned masked-Cholesky law (Gaussian for the GMRF,
asymmetric Laplace for the ALMRF) or an energy-based MRF sampled by Metropolis-Hastings (NN-MRF, MRF).
Posteriors: the masked-Cholesky law whose unary blocks come from each modality's encoder and whose cross
blocks come from a global encoder (GMRF, ALMRF, NN-MRF), or an energy-based MRF with Gaussian unary
potentials from the same encoders and neural pairwise potentials (MRF). Each part builds only what it uses.
Every prior part samples the same way: ``sample(n)`` draws of the latents and ``sample_missing(observed,
z_obs)``, the missing blocks given the observed ones, each with its sampler's diagnostics (a dict).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from mrfbench.models.latent import CholeskyLayout, MHResult, MHSettings, block_indices, metropolis_within_gibbs, noise
from mrfbench.models.networks import GroupedMLP, mlp, modality_encoder


class UnaryEncoder(nn.Module):
    """Each modality's encoder: features (B, M, H), the means (B, D) and log-scales (B, D) of its latent
    block and, with ``within``, the strictly-lower entries of its Cholesky block (B, n_within). Given
    ``observed`` (sorted modality indices) only those modalities are read and encoded; the other blocks'
    outputs are zeros (a unit factor at 0) and the features are the observed modalities' only."""

    def __init__(self, config, layout: CholeskyLayout, within: bool):
        super().__init__()
        m, d, h = config.n_modalities, config.latent_dim, config.hidden
        self.layout, self.latent_dim, self.within = layout, d, within
        self.trunks = modality_encoder(config, h)
        self.heads = GroupedMLP(m, [h, 2 * d + (layout.n_within_per_block if within else 0)])

    def forward(self, x: torch.Tensor, observed: list[int] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        d = self.latent_dim
        if observed is None:
            features = self.trunks(x)
            out = self.heads(features)
        else:
            features = self.trunks(x[..., observed, :], observed)
            out = self.heads(features, observed)
            out = out.new_zeros(*out.shape[:-2], x.shape[-2], out.shape[-1]).index_copy_(
                -2, torch.as_tensor(observed, device=x.device), out)
        mu, log_diag = out[..., :d].flatten(-2), out[..., d : 2 * d].flatten(-2)
        return features, mu, log_diag, self.layout.select_within(out[..., 2 * d :]) if self.within else None


class CholeskyPrior(nn.Module):
    """A learned law (``law(location, scale_tril)``) with the masked Cholesky layout; calling it gives the law.
    Its draws are exact (no diagnostics); the missing blocks are a draw of its conditional, or with
    ``missing="mean"`` its mean, and with ``moment_matched`` a draw of the conditional's moment-matched
    Gaussian."""

    def __init__(self, layout: CholeskyLayout, law: type, missing: str = "sample", moment_matched: bool = False):
        super().__init__()
        self.layout, self.law, self.missing, self.moment_matched = layout, law, missing, moment_matched
        self.loc = nn.Parameter(torch.zeros(layout.dim))
        self.log_diag = nn.Parameter(torch.zeros(layout.dim))
        self.within = nn.Parameter(torch.zeros(layout.n_within))
        self.cross = nn.Parameter(torch.zeros(layout.n_cross))

    def forward(self):
        return self.law(self.loc, self.layout.scale_tril(self.log_diag, self.within, self.cross))

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, dict]:
        return self().sample((n,)), {}

    def sample_missing(self, observed: list[int], z_obs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The missing blocks (B, n_per, |m| d) given the observed ones z_obs (B, n_per, |o| d), from the
        law's conditional (Proposition 1 for a Gaussian, Corollary 1's generalized hyperbolic for the AL)."""
        conditional = self().condition(observed, z_obs, self.layout.block_dim)
        if self.missing == "mean":
            return conditional.mean, {}
        return (conditional.moment_matched() if self.moment_matched else conditional).sample(), {}


class CholeskyPosterior(nn.Module):
    """q(z | x_1..x_M) as ``law`` with the masked Cholesky layout: unary blocks from each modality's
    encoder, cross blocks from a global encoder over all modalities' features."""

    def __init__(self, config, layout: CholeskyLayout, law: type):
        super().__init__()
        self.layout, self.law, self.latent_dim = layout, law, config.latent_dim
        self.encoder = UnaryEncoder(config, layout, within=True)
        self.global_encoder = mlp([config.n_modalities * config.hidden, config.global_hidden, config.global_hidden,
                                   layout.n_cross])

    def forward(self, x: torch.Tensor):
        features, mu, log_diag, within = self.encoder(x)
        return self.law(mu, self.layout.scale_tril(log_diag, within, self.global_encoder(features.flatten(-2))))

    def observed_latents(self, x: torch.Tensor, observed: list[int], n_per: int, mean: bool) -> torch.Tensor:
        """The observed blocks' latents (B, n_per, |o| d) from their unimodal factors N(mu_i, L_ii L_ii^T),
        which need only x_i (the cross blocks need every modality), or their means ``mean``."""
        _, mu, log_diag, within = self.encoder(x, observed)
        if mean:
            return mu[:, None, block_indices(observed, self.latent_dim, x.device)].expand(-1, n_per, -1)
        unary = self.law(mu, self.layout.scale_tril(log_diag, within, None))
        return unary.marginal(observed, self.latent_dim).sample((n_per,)).transpose(0, 1)


class PairwisePotentials(nn.Module):
    """sum_{i<j} psi_ij(z_i, z_j) over M blocks of d coordinates: one MLP over the two blocks concatenated
    with the one-hot positions of i and j."""

    def __init__(self, n_blocks: int, block_dim: int, hidden: int):
        super().__init__()
        self.n_blocks, self.block_dim = n_blocks, block_dim
        self.net = mlp([2 * block_dim + 2 * n_blocks, hidden, hidden, 1])
        self.register_buffer("pairs", torch.combinations(torch.arange(n_blocks), 2), persistent=False)
        self.register_buffer("onehot", torch.eye(n_blocks), persistent=False)

    def forward(self, z: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """The sum over ``pairs`` (P, 2) (default: every pair), (..., M d) -> (...)."""
        pairs = self.pairs if pairs is None else pairs
        zb = z.unflatten(-1, (self.n_blocks, self.block_dim))
        i, j = pairs[:, 0], pairs[:, 1]
        pair_in = torch.cat([zb[..., i, :], zb[..., j, :],
                             torch.cat([self.onehot[i], self.onehot[j]], -1).expand(*zb.shape[:-2], -1, -1)], -1)
        return self.net(pair_in).squeeze(-1).sum(-1)

    def touching(self, block: int) -> torch.Tensor:
        """The block pairs that involve ``block``."""
        return self.pairs[(self.pairs == block).any(-1)]


class MRFPotentials(nn.Module):
    """Energy of a fully connected MRF over M blocks of d coordinates: neural unary and pairwise potentials
    and a Gaussian base measure of precision ``confinement``."""

    def __init__(self, n_blocks: int, block_dim: int, hidden: int, confinement: float):
        super().__init__()
        self.n_blocks, self.block_dim, self.confinement = n_blocks, block_dim, confinement
        self.unary = mlp([block_dim + n_blocks, hidden, hidden, 1])
        self.pairwise = PairwisePotentials(n_blocks, block_dim, hidden)

    def _terms(self, z: torch.Tensor, blocks: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        zb = z.unflatten(-1, (self.n_blocks, self.block_dim))
        onehot = self.pairwise.onehot[blocks].expand(*zb.shape[:-2], -1, -1)
        base = 0.5 * self.confinement * zb[..., blocks, :].pow(2).sum((-2, -1))
        unary = self.unary(torch.cat([zb[..., blocks, :], onehot], -1)).squeeze(-1).sum(-1)
        return unary + self.pairwise(z, pairs) + base

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """E(z), (..., M d) -> (...)."""
        return self._terms(z, torch.arange(self.n_blocks, device=z.device), self.pairwise.pairs)

    def local(self, z: torch.Tensor, block: int) -> torch.Tensor:
        """The terms of E(z) that involve ``block`` (enough for Metropolis-Hastings updates of it)."""
        return self._terms(z, torch.tensor([block], device=z.device), self.pairwise.touching(block))


class EnergyPrior(nn.Module):
    """p(z) = exp(-E(z)) / Z with E an ``MRFPotentials`` energy, sampled by Metropolis-within-Gibbs over the
    blocks; it also keeps the chains (and their adapted step sizes) that estimate E_p[grad E] in training."""

    sampler_state = ("chains", "chains_ready", "chain_steps")  # buffers training changes (per pack member)

    def __init__(self, config, layout: CholeskyLayout):
        super().__init__()
        c = config
        self.config, self.layout = c, layout
        self.energy = MRFPotentials(c.n_modalities, c.latent_dim, c.potential_hidden, c.confinement)
        # the training chains' state, updated in place (a pack stacks it per member): their last states,
        # whether they have any yet, and their adapted step sizes
        self.register_buffer("chains", torch.zeros(c.pcd_chains, layout.dim), persistent=False)
        self.register_buffer("chains_ready", torch.zeros((), dtype=torch.bool), persistent=False)
        self.register_buffer("chain_steps", torch.full((c.n_modalities,), float(c.mh_step)), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.energy(z)

    def base_sample(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """n draws (n, D) of the Gaussian base measure (standard normal when there is none)."""
        c = self.config
        scale = 1.0 / math.sqrt(c.confinement) if c.confinement > 0 else 1.0
        return scale * noise.normal((n, self.layout.dim), like.dtype, like.device)

    def _mh(self) -> MHSettings:
        c = self.config
        return MHSettings(burn_in=c.mh_burn_in, thin=c.mh_thin, step=c.mh_step)

    @torch.no_grad()
    def advance_chains(self, start: torch.Tensor | None = None) -> torch.Tensor:
        """Move the training chains ``pcd_sweeps`` sweeps (step sizes adapted on the way and kept) and return
        their states: from ``start`` (C, D) when given (contrastive divergence), else the persistent chains
        (pcd_chains, D) after restarting a ``pcd_restart`` fraction from the base measure."""
        c = self.config
        like = self.energy.unary[0].weight
        persistent = start is None
        if persistent:
            fresh = self.base_sample(c.pcd_chains, like)
            restart = noise.uniform((c.pcd_chains, 1), torch.float32, like.device) < c.pcd_restart
            start = torch.where(restart | ~self.chains_ready, fresh, self.chains)
        settings = MHSettings(burn_in=c.pcd_sweeps - 1, thin=1, target_accept=MHSettings.target_accept)
        result = metropolis_within_gibbs(self.energy.local, start, range(c.n_modalities), c.latent_dim, 1,
                                         settings, self.chain_steps)
        self.chain_steps.copy_(result.steps)
        if persistent:
            self.chains.copy_(result.samples[:, -1])
            self.chains_ready.fill_(True)
        return result.samples[:, -1]

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, dict]:
        """n prior draws (n, D) from min(n, mh_chains) chains started at the base measure, and the
        acceptance rate."""
        like = self.energy.unary[0].weight
        chains = min(n, self.config.mh_chains)
        result = metropolis_within_gibbs(self.energy.local, self.base_sample(chains, like),
                                         range(self.config.n_modalities), self.config.latent_dim,
                                         math.ceil(n / chains), self._mh())
        z = result.samples.transpose(0, 1).reshape(-1, self.layout.dim)[:n]
        return z, {"mh_acceptance_unconditional": round(float(result.acceptance), 4)}

    @torch.no_grad()
    def sample_missing(self, observed: list[int], z_obs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The missing blocks (B, n_per, |m| d) given the observed ones z_obs (B, n_per, |o| d), by
        Metropolis-within-Gibbs with the observed blocks fixed: one chain per tuple kept every ``mh_thin``
        sweeps (``conditional_latent="mean"``: from its first draw), or one chain per draw; and the
        acceptance rate."""
        c = self.config
        per_tuple = c.conditional_latent == "mean"
        batch, n_per = z_obs.shape[:2]
        missing = [b for b in range(c.n_modalities) if b not in observed]
        starts = z_obs[:, 0] if per_tuple else z_obs.reshape(batch * n_per, -1)
        init = self.base_sample(len(starts), z_obs)
        init[:, block_indices(observed, c.latent_dim, z_obs.device)] = starts
        result: MHResult = metropolis_within_gibbs(self.energy.local, init, missing, c.latent_dim,
                                                   n_per if per_tuple else 1, self._mh())
        draws = result.samples.reshape(batch, n_per, -1)[..., block_indices(missing, c.latent_dim, z_obs.device)]
        return draws, {f"mh_acceptance_given_{'_'.join(map(str, observed))}": round(float(result.acceptance), 4)}


class EnergyPosterior(nn.Module):
    """q(z | x) proportional to exp(-E_q(z | x)), E_q = sum_i |(z_i - mu_i(x_i)) / s_i(x_i)|^2 / 2 +
    sum_{i<j} psi^q_ij(z_i, z_j): Gaussian unary potentials from each modality's encoder and neural pairwise
    potentials, sampled by Metropolis-within-Gibbs started near the means."""

    def __init__(self, config, layout: CholeskyLayout):
        super().__init__()
        self.layout, self.n_modalities, self.latent_dim = layout, config.n_modalities, config.latent_dim
        self.encoder = UnaryEncoder(config, layout, within=False)
        self.pairs = PairwisePotentials(config.n_modalities, config.latent_dim, config.potential_hidden)

    def unary(self, x: torch.Tensor, observed: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The unary potentials' means and log-scales, (B, D) each (of the ``observed`` blocks only, the others
        zeros, when given)."""
        _, mu, log_scale, _ = self.encoder(x, observed)
        return mu, log_scale

    def energy(self, z: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor, block: int | None = None):
        """E_q(z | x) or, with ``block``, its terms that involve that block; z (..., B, D), mu/log_scale (B, D)."""
        blocks = range(self.n_modalities) if block is None else [block]
        idx = block_indices(blocks, self.latent_dim, z.device)
        unary = 0.5 * ((z[..., idx] - mu[..., idx]) * torch.exp(-log_scale[..., idx])).pow(2).sum(-1)
        return unary + self.pairs(z, None if block is None else self.pairs.touching(block))

    def sample(self, mu: torch.Tensor, log_scale: torch.Tensor, n: int, burn_in: int) -> torch.Tensor:
        """n draws per data point, (n, B, D), by Metropolis-within-Gibbs from the unary means."""
        batch = len(mu)
        mu_k, ls_k = mu.repeat(n, 1), log_scale.repeat(n, 1)
        init = mu_k + torch.exp(ls_k) * noise.normal_like(mu_k)
        energy: Callable = lambda z, b: self.energy(z, mu_k, ls_k, b)  # noqa: E731
        step = (0.5 * ls_k.detach().mean().exp()).expand(self.n_modalities)  # a tensor: no host sync
        result = metropolis_within_gibbs(energy, init.detach(), range(self.n_modalities), self.latent_dim, 1,
                                         MHSettings(burn_in=burn_in, thin=1), step)
        return result.samples[:, 0].reshape(n, batch, -1)

    def observed_latents(self, x: torch.Tensor, observed: list[int], n_per: int, mean: bool) -> torch.Tensor:
        """The observed blocks' latents from the trained unary potentials N(mu_i, diag s_i^2), or mu_i."""
        mu, log_scale = self.unary(x, observed)
        idx = block_indices(observed, self.latent_dim, x.device)
        mu, scale = mu[:, None, idx].expand(-1, n_per, -1), log_scale[:, None, idx].exp()
        return mu if mean else mu + scale * noise.normal_like(mu)
