"""MRF MVAE (paper Appendix E, experimental): an MRF prior and an MRF posterior, both with intractable
partition functions.

Prior: the NN-MRF energy E_p (neural unary and pairwise potentials over the blocks, Gaussian base measure).
Posterior: E_q(z | x) = sum_i |(z_i - mu_i(x_i)) / s_i(x_i)|^2 / 2 + sum_{i<j} psi^q_ij(z_i, z_j), unary
Gaussian potentials from the modality encoders plus neural pairwise potentials, sampled by
Metropolis-within-Gibbs started at the means. The ELBO (Eq. 37) is
E_q[ln p(X|z)] - beta (E_q[E_p - E_q] + ln Z_p - ln Z_q); its gradient needs only samples (Eq. 38):
  decoder:   E_q[grad ln p(X|z)];
  prior:     -beta (E_q[grad E_p] - E_p[grad E_p]), with E_p over persistent prior chains;
  posterior: -Cov_q(g, grad E_q), g = ln p(X|z) - beta E_p(z) + beta E_q(z | x) (the score-function terms
             and grad ln Z_q cancel), estimated with K samples per data point and a leave-one-out baseline.
The energies are known only up to the unknown ln Z_p / Z_q, so the loss value reported (and used to keep
the best checkpoint) is the reconstruction term -E_q[ln p(X|z)]; the energy gap is logged beside it. It
learns slowly (the encoder's gradient is a score-function estimate): experimental, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrfbench.errors import bounded
from mrfbench.models.base import LossOutput
from mrfbench.models.latent import CholeskyLayout, block_indices
from mrfbench.models.mrf_family import EnergyPriorConfig, EnergyPriorMVAE
from mrfbench.models.mrf_parts import EnergyPosterior, EnergyPrior
from mrfbench.models.registry import register_model


@dataclass
class MRFConfig(EnergyPriorConfig):
    n_importance: int = bounded(4, ge=2, why="the leave-one-out baseline")  # posterior samples per data point
    posterior_burn_in: int = bounded(10, ge=1, label="posterior burn-in")  # Metropolis-Hastings sweeps per
    # training step from the posterior means
    pcd_chains: int = 256  # persistent chains for the prior expectation of Eq. 38
    pcd_sweeps: int = 1
    pcd_restart: float = 0.0


@register_model("mrf")
class MRFMVAE(EnergyPriorMVAE):
    """MRF prior and MRF posterior trained with sampled log-partition gradients."""

    description = "MRF MVAE: MRF prior and MRF posterior, sampled ln Z gradients (paper Appendix E)"
    experimental = True
    config_class = MRFConfig

    def __init__(self, config: MRFConfig):
        super().__init__(config, CholeskyLayout(config.n_modalities, config.latent_dim),
                         posterior=lambda layout: EnergyPosterior(config, layout),
                         prior=lambda layout: EnergyPrior(config, layout))

    @property
    def capacity(self) -> int:
        """Per-data-point parameters of the posterior: unary means and scales (the pairwise potentials are
        shared by all data points)."""
        return 2 * self.layout.dim

    def loss(self, x: torch.Tensor, beta_scale: float = 1.0) -> LossOutput:
        beta = self.config.beta * beta_scale
        c, K, q = self.config, self.config.n_importance, self.posterior_net
        mu, log_scale = q.unary(x)
        z = q.sample(mu.detach(), log_scale.detach(), K, c.posterior_burn_in)  # (K, B, D)
        recon = self.likelihood.log_prob(x, self.decode(z)).sum(-1)  # (K, B)
        e_p, e_q = self.prior_net(z), q.energy(z, mu, log_scale)
        with torch.no_grad():
            g = recon - beta * e_p + beta * e_q
            baseline = (g.sum(0, keepdim=True) - g) / (K - 1)  # leave-one-out
        posterior_grad = ((g - baseline) * e_q).mean()
        prior_grad = beta * (e_p.mean() - self.prior_net(self.advance_chains()).mean())
        surrogate = -recon.mean() + prior_grad + posterior_grad
        reported = -recon.mean().detach()
        loss = surrogate - surrogate.detach() + reported  # the gradient of the surrogate, the value reported
        return LossOutput(loss, {"recon": -recon.mean().detach(), "energy_gap": (e_p - e_q).mean().detach()})

    @torch.no_grad()
    def kl_per_block(self, x: torch.Tensor) -> torch.Tensor:
        """Per block, the KL between Gaussians fitted to the posterior samples' block and to prior samples
        (as for the NN-MRF); the posterior's own marginals are only known through samples."""
        c, d = self.config, self.config.latent_dim
        mu, log_scale = self.posterior_net.unary(x)
        zq = self.posterior_net.sample(mu, log_scale, 8, c.mh_burn_in).reshape(-1, self.layout.dim)
        zp = self.prior_net.sample(c.collapse_samples)[0]
        kl = []
        for i in range(c.n_modalities):
            idx = block_indices([i], d, x.device)
            fit_q = torch.distributions.MultivariateNormal(zq[:, idx].mean(0), torch.cov(zq[:, idx].T))
            fit_p = torch.distributions.MultivariateNormal(zp[:, idx].mean(0), torch.cov(zp[:, idx].T))
            kl.append(torch.distributions.kl_divergence(fit_q, fit_p))
        return torch.stack(kl)
