"""GMRF MVAE (paper Sec. 3.1.1): a Gaussian MRF, i.e. a full-covariance Gaussian, as prior and posterior.

Each modality's encoder gives its mean mu_i and the diagonal block L_ii of the posterior's Cholesky factor;
a global encoder over all modalities' features gives the off-diagonal blocks L_ij. The prior is a learned
full-covariance Gaussian with the same (optionally masked) Cholesky layout. Each modality is decoded from
its own latent block z_i, so all dependence between modalities has to live in the latent covariance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.distributions import kl_divergence

from mrfbench.errors import bounded
from mrfbench.models.base import LossOutput
from mrfbench.models.latent import CholeskyLayout, FullCovGaussian
from mrfbench.models.mrf_family import MRFFamilyConfig, MRFFamilyMVAE
from mrfbench.models.mrf_parts import CholeskyPosterior, CholeskyPrior
from mrfbench.models.registry import register_model


@dataclass
class GMRFConfig(MRFFamilyConfig):
    sparsity: float = bounded(0.0, ge=0, lt=1, label="masking sparsity")  # fraction of the strictly-lower entries of L masked to zero
    mask_seed: int = 0
    global_hidden: int = bounded(128, ge=1)
    conditional_missing: Literal["sample", "mean"] = "sample"  # missing blocks in conditional generation: a
    # draw of the prior's conditional, or its mean (whose decoding keeps the digit a draw can lose: the
    # Gaussian coupling of two blocks carries little information; see tests/benchmarks/coherence_diagnosis.py)


@register_model("gmrf")
class GMRFMVAE(MRFFamilyMVAE):
    """Gaussian MRF MVAE with full-covariance Gaussian prior and posterior."""

    description = "GMRF MVAE: full-covariance Gaussian MRF prior and posterior (paper Sec. 3.1.1)"
    config_class = GMRFConfig
    latent_law = FullCovGaussian  # law of prior and posterior, built from (location or skew, Cholesky factor)

    def __init__(self, config: GMRFConfig):
        super().__init__(config, CholeskyLayout(config.n_modalities, config.latent_dim, config.sparsity, config.mask_seed),
                         posterior=lambda layout: CholeskyPosterior(config, layout, self.latent_law),
                         prior=lambda layout: CholeskyPrior(layout, self.latent_law, config.conditional_missing,
                                                            moment_matched=self.moment_matched(config)))

    @staticmethod
    def moment_matched(config: GMRFConfig) -> bool:
        """Whether the missing blocks are drawn from the conditional's moment-matched Gaussian."""
        return False

    def prior(self):
        return self.prior_net()

    def posterior(self, x: torch.Tensor):
        """q(z | x_1..x_M): unary blocks from each modality, cross blocks from the global encoder."""
        return self.posterior_net(x)

    def loss(self, x: torch.Tensor, beta_scale: float = 1.0) -> LossOutput:
        beta = self.config.beta * beta_scale
        q = self.posterior(x)
        z = q.rsample()
        recon = self.likelihood.log_prob(x, self.decode(z)).sum(-1)
        kl = kl_divergence(q, self.prior())
        loss = (-recon + beta * kl).mean()
        return LossOutput(loss, {"recon": -recon.mean().detach(), "kl": kl.mean().detach()})

    @torch.no_grad()
    def kl_per_block(self, x: torch.Tensor) -> torch.Tensor:
        q, p = self.posterior(x), self.prior()
        d = self.config.latent_dim
        return torch.stack(
            [kl_divergence(q.marginal([i], d), p.marginal([i], d)).mean() for i in range(self.config.n_modalities)]
        )
