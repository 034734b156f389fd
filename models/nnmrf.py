"""NN-MRF MVAE (paper Sec. 3.1.3, Appendix A.4): GMRF posterior, neural MRF prior, Metropolis-Hastings.

The prior is p(z) = exp(-E(z)) / Z with E(z) = sum_{i<j} psi_ij(z_i, z_j) + sum_i psi_i(z_i) + c |z|^2 / 2:
the potentials are 3-layer ReLU MLPs over the latent blocks concatenated with one-hot positions (i, or i
and j). The last term is our numerical guard, a Gaussian base measure of precision c (``confinement``;
0 gives the paper's form): ReLU potentials grow at most linearly, so with c > 0 the partition function is
finite whatever the networks learn and the Metropolis-Hastings chains cannot drift away.

The loss is Eq. 15 with its log-partition term estimated by importance sampling from the posterior
(K = ``n_importance`` samples per data point): with a_k = -E(z_k) - ln q(z_k | x), the regulariser
E_q[ln q] + E_q[E] + ln Z is estimated by logmeanexp_k a_k - mean_k a_k, which is >= 0 for every draw (a
Jensen gap; with K = 1 it is identically 0, so K >= 2). That estimate's gradient nearly cancels for the
prior, which then hardly learns; so by default (``partition="sampled"``) the estimate gives the value only
and the gradient of ln Z, -E_p[grad E], comes from samples of the prior itself, drawn by
Metropolis-within-Gibbs chains that advance a few sweeps per training step (as Appendix E does for the
general MRF): started at the batch's posterior draws (contrastive divergence, ``chain_start="posterior"``),
or persistent across steps (``"persistent"``, which on copula let the energy dig wells the chains never
found and diverged). Sampling from the prior and conditional sampling use
Metropolis-within-Gibbs over the modality blocks (``mrfbench.mcmc``); acceptance rates are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mrfbench.errors import UsageError
from mrfbench.models import register_model
from mrfbench.models.base import LossOutput
from mrfbench.models.gmrf import GMRFMVAE, GMRFConfig
from mrfbench.models.latent import FullCovGaussian, MHSettings, block_indices, log_mean_exp, metropolis_within_gibbs
from mrfbench.models.networks import mlp


class MRFPotentials(nn.Module):
    """Energy of a fully connected MRF over M blocks of d coordinates, with neural unary and pairwise
    potentials and a Gaussian base measure of precision ``confinement``."""

    def __init__(self, n_blocks: int, block_dim: int, hidden: int, confinement: float):
        super().__init__()
        self.n_blocks, self.block_dim, self.confinement = n_blocks, block_dim, confinement
        self.unary = mlp([block_dim + n_blocks, hidden, hidden, 1])
        self.pairwise = mlp([2 * block_dim + 2 * n_blocks, hidden, hidden, 1])
        self.register_buffer("pairs", torch.combinations(torch.arange(n_blocks), 2), persistent=False)
        self.register_buffer("onehot", torch.eye(n_blocks), persistent=False)

    def pairwise_sum(self, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """sum of psi_ij(z_i, z_j) over the given (P, 2) block pairs, (..., M d) -> (...)."""
        zb = z.unflatten(-1, (self.n_blocks, self.block_dim))
        i, j = pairs[:, 0], pairs[:, 1]
        pair_in = torch.cat([zb[..., i, :], zb[..., j, :],
                             torch.cat([self.onehot[i], self.onehot[j]], -1).expand(*zb.shape[:-2], -1, -1)], -1)
        return self.pairwise(pair_in).squeeze(-1).sum(-1)

    def _terms(self, z: torch.Tensor, blocks: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        zb = z.unflatten(-1, (self.n_blocks, self.block_dim))
        unary_in = torch.cat([zb[..., blocks, :], self.onehot[blocks].expand(*zb.shape[:-2], -1, -1)], -1)
        base = 0.5 * self.confinement * zb[..., blocks, :].pow(2).sum((-2, -1))
        return self.unary(unary_in).squeeze(-1).sum(-1) + self.pairwise_sum(z, pairs) + base

    def touching(self, block: int) -> torch.Tensor:
        """The block pairs that involve ``block``."""
        return self.pairs[(self.pairs == block).any(-1)]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """E(z), (..., M d) -> (...)."""
        return self._terms(z, torch.arange(self.n_blocks, device=z.device), self.pairs)

    def local(self, z: torch.Tensor, block: int) -> torch.Tensor:
        """The terms of E(z) that involve ``block`` (enough for Metropolis-Hastings updates of it)."""
        return self._terms(z, torch.tensor([block], device=z.device), self.touching(block))


PARTITIONS = ("sampled", "posterior", "batch")


@dataclass
class NNMRFConfig(GMRFConfig):
    conditional_latent: str = "mean"  # one chain per tuple from its observed blocks' means ("sample": a chain per draw)
    potential_hidden: int = 32  # width of the potential MLPs (the paper used 1024 for 8-D blocks of images)
    confinement: float = 1.0  # precision of the Gaussian base measure in the prior energy (0: none)
    n_importance: int = 8  # posterior samples per data point for the log-partition estimate (Eq. 15)
    partition: str = "sampled"  # gradient of ln Z: from prior samples ("sampled"), or from its importance
    # estimate with each point's posterior (Eq. 15, "posterior") or the batch's aggregate posterior ("batch")
    chain_start: str = "posterior"  # "sampled" chains start at the batch's posterior draws each step
    # (contrastive divergence), or "persistent": they carry on from the previous step
    pcd_chains: int = 512  # persistent chains of the "sampled" gradient
    pcd_sweeps: int = 5  # Metropolis-within-Gibbs sweeps the chains advance per training step
    pcd_restart: float = 0.05  # fraction of persistent chains restarted from the base measure each step
    mh_chains: int = 16_384  # parallel chains for prior sampling
    mh_burn_in: int = 200
    mh_thin: int = 5
    mh_step: float = 0.5
    collapse_samples: int = 20_000  # prior samples for the per-block KL of the collapse report

    def __post_init__(self):
        super().__post_init__()
        if self.n_importance < 2:
            raise UsageError(f"n importance must be >= 2 (with 1 the log-partition term vanishes), got {self.n_importance}")
        if self.confinement < 0:
            raise UsageError(f"confinement must be >= 0, got {self.confinement}")
        if self.partition not in PARTITIONS:
            raise UsageError(f"unknown partition '{self.partition}'; valid: {', '.join(PARTITIONS)}")
        if self.chain_start not in ("posterior", "persistent"):
            raise UsageError(f"unknown chain start '{self.chain_start}'; valid: posterior, persistent")
        if not 0.0 <= self.pcd_restart <= 1.0:
            raise UsageError(f"pcd restart must be in [0, 1], got {self.pcd_restart}")
        for name in ("mh_chains", "mh_thin", "potential_hidden", "collapse_samples", "pcd_chains", "pcd_sweeps"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.mh_burn_in < 0 or not self.mh_step > 0:
            raise UsageError("mh burn-in must be >= 0 and mh step > 0")


@register_model("nnmrf")
class NNMRFMVAE(GMRFMVAE):
    """GMRF posterior with a neural-network MRF prior sampled by Metropolis-Hastings."""

    description = "NN-MRF MVAE: GMRF posterior, neural MRF prior, Metropolis-Hastings sampling (paper Sec. 3.1.3)"
    config_class = NNMRFConfig

    def __init__(self, config: NNMRFConfig):
        super().__init__(config)
        for name in ("prior_loc", "prior_log_diag", "prior_within", "prior_cross"):
            delattr(self, name)  # the Gaussian prior of the GMRF is replaced by the MRF energy
        self.energy = MRFPotentials(config.n_modalities, config.latent_dim, config.potential_hidden,
                                    config.confinement)
        self.register_buffer("chains", torch.empty(0), persistent=False)  # persistent chains ("sampled")
        self.chain_steps = [config.mh_step] * config.n_modalities

    def prior(self):
        raise NotImplementedError("the NN-MRF prior has no closed form; sample it with sample_latents")

    def loss(self, x: torch.Tensor) -> LossOutput:
        q = self.posterior(x)
        z = q.rsample((self.config.n_importance,))  # (K, B, D)
        recon = self.likelihood.log_prob(x, self.decode(z)).sum(-1).mean(0)
        energy, log_q = self.energy(z), q.log_prob(z)
        divergence = (energy + log_q).mean(0) + self.log_partition(q, z, energy, log_q)  # KL(q || p) estimate
        loss = (-recon + self.beta * divergence).mean()
        return LossOutput(loss, {"recon": -recon.mean().item(), "kl": divergence.mean().item()})

    def log_partition(self, q, z: torch.Tensor, energy: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """Importance-sampled ln Z of the prior from the posterior draws z (K, B, D), given their energies E(z)
        and posterior log-densities ln q(z | x_b), both (K, B).

        "posterior" (Eq. 15): per data point, proposal q(z | x_b). Its draws sit where q is, so the prior's
        gradient, E_q[grad E] - sum_k w_k grad E(z_k) with w the normalised weights of those same draws, nearly
        cancels. "batch" (ours): one estimate for the batch with the aggregate
        posterior (1/B) sum_b q(z | x_b) as proposal, so the gradient contrasts the posteriors' mass with the
        prior's across the batch. "sampled" (default): the "posterior" estimate's value, with the gradient of
        ln Z, -E_p[grad E], from the persistent chains' current states (contrastive, as in maximum likelihood
        for energy models)."""
        if self.config.partition == "sampled":
            estimate = log_mean_exp(-energy - log_q, 0).detach()
            if not torch.is_grad_enabled():
                return estimate
            start = z[0].detach() if self.config.chain_start == "posterior" else None
            negative = self.energy(self.advance_chains(start)).mean()
            return estimate - (negative - negative.detach())  # value: the estimate; gradient: -E_p[grad E]
        if self.config.partition == "posterior":
            return log_mean_exp(-energy - log_q, 0)
        log_mixture = log_mean_exp(q.log_prob_each(z.flatten(0, 1)), -1)  # each z_kb under every q(z | x_b')
        return log_mean_exp(-energy.flatten() - log_mixture, 0)

    @torch.no_grad()
    def advance_chains(self, start: torch.Tensor | None = None) -> torch.Tensor:
        """Move the prior chains ``pcd_sweeps`` Metropolis-within-Gibbs sweeps (step sizes adapted on the way
        and kept) and return their states: from ``start`` (C, D) when given (contrastive divergence), else
        the persistent chains (pcd_chains, D) after restarting a ``pcd_restart`` fraction from the base
        measure."""
        c = self.config
        like = next(self.parameters())
        if start is None:
            fresh = self._base_sample((c.pcd_chains, self.layout.dim), like)
            if self.chains.shape != fresh.shape:
                self.chains = fresh
            restart = torch.rand(c.pcd_chains, 1, device=like.device) < c.pcd_restart
            start = torch.where(restart, fresh, self.chains)
        settings = MHSettings(burn_in=c.pcd_sweeps - 1, thin=1, target_accept=MHSettings.target_accept)
        result = metropolis_within_gibbs(self.energy.local, start, range(c.n_modalities), c.latent_dim, 1,
                                         settings, self.chain_steps)
        self.chains, self.chain_steps = result.samples[:, -1], result.steps
        return self.chains

    def _mh(self) -> MHSettings:
        c = self.config
        return MHSettings(burn_in=c.mh_burn_in, thin=c.mh_thin, step=c.mh_step)

    def _base_sample(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        scale = 1.0 / math.sqrt(self.config.confinement) if self.config.confinement > 0 else 1.0
        return scale * torch.randn(*shape, device=like.device, dtype=like.dtype)

    @torch.no_grad()
    def sample_latents(self, n: int, report: bool = True) -> torch.Tensor:
        """n prior draws: min(n, mh_chains) chains from the base measure, ceil(n / chains) thinned states each;
        ``report`` records the acceptance rate in ``sampler_diagnostics``."""
        like = next(self.parameters())
        chains = min(n, self.config.mh_chains)
        init = self._base_sample((chains, self.layout.dim), like)
        result = metropolis_within_gibbs(self.energy.local, init, range(self.config.n_modalities),
                                         self.config.latent_dim, math.ceil(n / chains), self._mh())
        if report:
            self.sampler_diagnostics["mh_acceptance_unconditional"] = round(result.acceptance, 4)
        return result.samples.transpose(0, 1).reshape(-1, self.layout.dim)[:n]

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.decode(self.sample_latents(n))

    def sample_missing(self, observed: list[int], z_obs: torch.Tensor) -> torch.Tensor:
        """Missing blocks by Metropolis-within-Gibbs on the prior with the observed blocks fixed: one chain
        per tuple kept every ``mh_thin`` sweeps (observed blocks at their means), or one chain per draw."""
        c = self.config
        batch, n_per = z_obs.shape[:2]
        missing = [b for b in range(c.n_modalities) if b not in observed]
        obs_idx = block_indices(observed, c.latent_dim, z_obs.device)
        miss_idx = block_indices(missing, c.latent_dim, z_obs.device)
        starts = z_obs[:, 0] if c.conditional_latent == "mean" else z_obs.reshape(batch * n_per, -1)
        init = self._base_sample((len(starts), self.layout.dim), z_obs)
        init[:, obs_idx] = starts
        keep = n_per if c.conditional_latent == "mean" else 1
        result = metropolis_within_gibbs(self.energy.local, init, missing, c.latent_dim, keep, self._mh())
        self.sampler_diagnostics[f"mh_acceptance_given_{'_'.join(map(str, observed))}"] = round(result.acceptance, 4)
        return result.samples.reshape(batch, n_per, -1)[..., miss_idx]

    @torch.no_grad()
    def kl_per_block(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q_i || N(m_i, S_i)) per block, with (m_i, S_i) the moments of Metropolis-Hastings prior samples:
        the prior's block marginals have no closed form, so the collapse report uses their Gaussian fit."""
        q, d = self.posterior(x), self.config.latent_dim
        z = self.sample_latents(self.config.collapse_samples, report=False)
        kl = []
        for i in range(self.config.n_modalities):
            zi = z[:, block_indices([i], d, z.device)]
            fit = FullCovGaussian(zi.mean(0), torch.linalg.cholesky(torch.cov(zi.T).reshape(d, d)))
            kl.append(torch.distributions.kl_divergence(q.marginal([i], d), fit).mean())
        return torch.stack(kl)
