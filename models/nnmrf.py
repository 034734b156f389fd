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
Metropolis-within-Gibbs over the modality blocks (``mrf_parts.EnergyPrior``); acceptance rates are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from mrfbench.errors import bounded
from mrfbench.models.base import LossOutput
from mrfbench.models.gmrf import GMRFConfig
from mrfbench.models.latent import CholeskyLayout, FullCovGaussian, block_indices, log_mean_exp
from mrfbench.models.mrf_family import EnergyPriorConfig, EnergyPriorMVAE
from mrfbench.models.mrf_parts import CholeskyPosterior, EnergyPrior
from mrfbench.models.registry import register_model


@dataclass
class NNMRFConfig(GMRFConfig, EnergyPriorConfig):
    n_importance: int = bounded(8, ge=2, why="with 1 the log-partition term vanishes")  # posterior samples per point
    conditional_latent: Literal["sample", "mean"] = "mean"  # one chain per tuple ("sample": a chain per draw)
    partition: Literal["sampled", "posterior", "batch"] = "sampled"  # gradient of ln Z: from prior samples
    # ("sampled"), or from its importance estimate with each point's posterior (Eq. 15, "posterior") or the
    # batch's aggregate posterior ("batch")
    chain_start: Literal["posterior", "persistent"] = "posterior"  # "sampled" chains start at the batch's
    # posterior draws each step (contrastive divergence), or carry on from the previous step


@register_model("nnmrf")
class NNMRFMVAE(EnergyPriorMVAE):
    """GMRF posterior with a neural-network MRF prior sampled by Metropolis-Hastings."""

    description = "NN-MRF MVAE: GMRF posterior, neural MRF prior, Metropolis-Hastings sampling (paper Sec. 3.1.3)"
    config_class = NNMRFConfig

    def __init__(self, config: NNMRFConfig):
        super().__init__(config, CholeskyLayout(config.n_modalities, config.latent_dim, config.sparsity, config.mask_seed),
                         posterior=lambda layout: CholeskyPosterior(config, layout, FullCovGaussian),
                         prior=lambda layout: EnergyPrior(config, layout))

    def posterior(self, x: torch.Tensor):
        return self.posterior_net(x)

    def loss(self, x: torch.Tensor, beta_scale: float = 1.0) -> LossOutput:
        beta = self.config.beta * beta_scale
        q = self.posterior(x)
        z = q.rsample((self.config.n_importance,))  # (K, B, D)
        recon = self.likelihood.log_prob(x, self.decode(z)).sum(-1).mean(0)
        energy, log_q = self.prior_net(z), q.log_prob(z)
        divergence = (energy + log_q).mean(0) + self.log_partition(q, z, energy, log_q)  # KL(q || p) estimate
        loss = (-recon + beta * divergence).mean()
        return LossOutput(loss, {"recon": -recon.mean().detach(), "kl": divergence.mean().detach()})
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
            negative = self.prior_net(self.advance_chains(start)).mean()
            return estimate - (negative - negative.detach())  # value: the estimate; gradient: -E_p[grad E]
        if self.config.partition == "posterior":
            return log_mean_exp(-energy - log_q, 0)
        log_mixture = log_mean_exp(q.log_prob_each(z.flatten(0, 1)), -1)  # each z_kb under every q(z | x_b')
        return log_mean_exp(-energy.flatten() - log_mixture, 0)

    @torch.no_grad()
    def kl_per_block(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q_i || N(m_i, S_i)) per block, with (m_i, S_i) the moments of Metropolis-Hastings prior samples:
        the prior's block marginals have no closed form, so the collapse report uses their Gaussian fit."""
        q, d = self.posterior(x), self.config.latent_dim
        z = self.prior_net.sample(self.config.collapse_samples)[0]
        kl = []
        for i in range(self.config.n_modalities):
            zi = z[:, block_indices([i], d, z.device)]
            fit = FullCovGaussian(zi.mean(0), torch.linalg.cholesky(torch.cov(zi.T).reshape(d, d)))
            kl.append(torch.distributions.kl_divergence(q.marginal([i], d), fit).mean())
        return torch.stack(kl)
