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

import math
from dataclasses import dataclass

import torch

from mrfbench.errors import UsageError
from mrfbench.models import register_model
from mrfbench.models.base import LossOutput
from mrfbench.models.latent import MHSettings, block_indices, metropolis_within_gibbs
from mrfbench.models.nnmrf import NNMRFMVAE, MRFPotentials, NNMRFConfig


@dataclass
class MRFConfig(NNMRFConfig):
    n_importance: int = 4  # posterior samples per data point (K >= 2 for the leave-one-out baseline)
    posterior_burn_in: int = 10  # Metropolis-Hastings sweeps per training step from the posterior means
    pcd_chains: int = 256  # persistent chains for the prior expectation of Eq. 38
    pcd_sweeps: int = 1
    pcd_restart: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.posterior_burn_in < 1:
            raise UsageError("posterior burn-in must be >= 1")


@register_model("mrf")
class MRFMVAE(NNMRFMVAE):
    """MRF prior and MRF posterior trained with sampled log-partition gradients."""

    description = "MRF MVAE: MRF prior and MRF posterior, sampled ln Z gradients (paper Appendix E)"
    experimental = True
    config_class = MRFConfig

    def __init__(self, config: MRFConfig):
        super().__init__(config)
        del self.global_encoder  # the posterior's coupling is its pairwise potentials, not a Cholesky factor
        self.posterior_pairs = MRFPotentials(config.n_modalities, config.latent_dim, config.potential_hidden, 0.0)
        del self.posterior_pairs.unary

    @property
    def capacity(self) -> int:
        """Per-data-point parameters of the posterior: unary means and scales (the pairwise potentials are
        shared by all data points)."""
        return 2 * self.layout.dim

    def posterior(self, x: torch.Tensor):
        raise NotImplementedError("the MRF posterior has no closed form; it is sampled by Metropolis-Hastings")

    def posterior_energy(self, z: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor, block: int | None = None):
        """E_q(z | x) or, with ``block``, its terms that involve that block; z (..., B, D), mu/log_scale (B, D)."""
        c, pairs = self.config, self.posterior_pairs
        blocks = range(c.n_modalities) if block is None else [block]
        idx = block_indices(blocks, c.latent_dim, z.device)
        unary = 0.5 * ((z[..., idx] - mu[..., idx]) * torch.exp(-log_scale[..., idx])).pow(2).sum(-1)
        return unary + pairs.pairwise_sum(z, pairs.pairs if block is None else pairs.touching(block))

    def _posterior_samples(self, mu: torch.Tensor, log_scale: torch.Tensor, n: int, burn_in: int) -> torch.Tensor:
        """n draws per data point, (n, B, D), by Metropolis-within-Gibbs from the unary means."""
        c = self.config
        batch = len(mu)
        mu_k, ls_k = mu.repeat(n, 1), log_scale.repeat(n, 1)
        init = mu_k + torch.exp(ls_k) * torch.randn_like(mu_k)
        result = metropolis_within_gibbs(lambda z, b: self.posterior_energy(z, mu_k, ls_k, b), init.detach(),
                                         range(c.n_modalities), c.latent_dim, 1,
                                         MHSettings(burn_in=burn_in, thin=1, step=0.5 * math.exp(ls_k.mean().item())))
        return result.samples[:, 0].reshape(n, batch, -1)

    def observed_latents(self, x_in: torch.Tensor, observed: list[int], n_per: int) -> torch.Tensor:
        """The observed blocks' latents from the posterior's trained unary potentials N(mu_i, diag s_i^2)
        (the GMRF's within-block Cholesky entries, which this loss never trains, are not used), or mu_i."""
        c = self.config
        mu, log_scale = self._unary_params(x_in)
        idx = block_indices(observed, c.latent_dim, x_in.device)
        mu, scale = mu[:, None, idx].expand(-1, n_per, -1), log_scale[:, None, idx].exp()
        return mu if c.conditional_latent == "mean" else mu + scale * torch.randn_like(mu)

    def _unary_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, mu, log_diag, _ = self._unary(x)
        return mu, log_diag

    def loss(self, x: torch.Tensor) -> LossOutput:
        c, K = self.config, self.config.n_importance
        mu, log_scale = self._unary_params(x)
        z = self._posterior_samples(mu.detach(), log_scale.detach(), K, c.posterior_burn_in)  # (K, B, D)
        recon = self.likelihood.log_prob(x, self.decode(z)).sum(-1)  # (K, B)
        e_p, e_q = self.energy(z), self.posterior_energy(z, mu, log_scale)
        with torch.no_grad():
            g = recon - self.beta * e_p + self.beta * e_q
            baseline = (g.sum(0, keepdim=True) - g) / (K - 1)  # leave-one-out
        posterior_grad = ((g - baseline) * e_q).mean()
        prior_grad = self.beta * (e_p.mean() - self.energy(self.advance_chains()).mean())
        surrogate = -recon.mean() + prior_grad + posterior_grad
        reported = -recon.mean().detach()
        loss = surrogate - surrogate.detach() + reported  # the gradient of the surrogate, the value reported
        return LossOutput(loss, {"recon": -recon.mean().item(), "energy_gap": (e_p - e_q).mean().item()})

    @torch.no_grad()
    def kl_per_block(self, x: torch.Tensor) -> torch.Tensor:
        """Per block, the Monte Carlo KL between the posterior samples' block and the Gaussian fitted to prior
        samples (as for the NN-MRF); the posterior's own marginals are only known through samples."""
        c, d = self.config, self.config.latent_dim
        mu, log_scale = self._unary_params(x)
        zq = self._posterior_samples(mu, log_scale, 8, c.mh_burn_in).reshape(-1, self.layout.dim)
        zp = self.sample_latents(c.collapse_samples, report=False)
        kl = []
        for i in range(c.n_modalities):
            idx = block_indices([i], d, x.device)
            fit_q = torch.distributions.MultivariateNormal(zq[:, idx].mean(0), torch.cov(zq[:, idx].T))
            fit_p = torch.distributions.MultivariateNormal(zp[:, idx].mean(0), torch.cov(zp[:, idx].T))
            kl.append(torch.distributions.kl_divergence(fit_q, fit_p))
        return torch.stack(kl)
