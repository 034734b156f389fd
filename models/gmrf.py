"""GMRF MVAE (paper Sec. 3.1.1): a Gaussian MRF, i.e. a full-covariance Gaussian, as prior and posterior.

Each modality's encoder gives its mean mu_i and the diagonal block L_ii of the posterior's Cholesky factor;
a global encoder over all modalities' features gives the off-diagonal blocks L_ij. The prior is a learned
full-covariance Gaussian with the same (optionally masked) Cholesky layout. Each modality is decoded from
its own latent block z_i, so all dependence between modalities has to live in the latent covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import kl_divergence

from mrfbench.errors import UsageError
from mrfbench.models import register_model
from mrfbench.models.base import LossOutput, ModelConfig, MultimodalVAE
from mrfbench.models.latent import CholeskyLayout, FullCovGaussian, block_indices
from mrfbench.models.networks import GroupedMLP, Likelihood, mlp, modality_decoder, modality_encoder


@dataclass
class GMRFConfig(ModelConfig):
    sparsity: float = 0.0  # fraction of the strictly-lower entries of L masked to zero
    mask_seed: int = 0
    global_hidden: int = 128
    conditional_latent: str = "sample"  # observed blocks in conditional generation: "sample" or "mean"

    def __post_init__(self):
        super().__post_init__()
        if self.conditional_latent not in ("sample", "mean"):
            raise UsageError(f"conditional latent must be 'sample' or 'mean', got '{self.conditional_latent}'")
        if not 0.0 <= self.sparsity < 1.0:
            raise UsageError(f"masking sparsity must be in [0, 1), got {self.sparsity}")


@register_model("gmrf")
class GMRFMVAE(MultimodalVAE):
    """Gaussian MRF MVAE with full-covariance Gaussian prior and posterior."""

    description = "GMRF MVAE: full-covariance Gaussian MRF prior and posterior (paper Sec. 3.1.1)"
    config_class = GMRFConfig
    latent_law = FullCovGaussian  # law of prior and posterior, built from (location or skew, Cholesky factor)

    def __init__(self, config: GMRFConfig):
        super().__init__(config)
        c = config
        m, d, h = c.n_modalities, c.latent_dim, c.hidden
        self.layout = CholeskyLayout(m, d, c.sparsity, c.mask_seed)
        self.trunks = modality_encoder(c, h)
        self.heads = GroupedMLP(m, [h, 2 * d + self.layout.n_within_per_block])
        self.global_encoder = mlp([m * h, c.global_hidden, c.global_hidden, self.layout.n_cross])
        self.decoders = modality_decoder(c, d)
        self.likelihood = Likelihood(c.likelihood, m, c.modality_dim, c.likelihood_scale)
        D = self.layout.dim
        self.prior_loc = nn.Parameter(torch.zeros(D))
        self.prior_log_diag = nn.Parameter(torch.zeros(D))
        self.prior_within = nn.Parameter(torch.zeros(self.layout.n_within))
        self.prior_cross = nn.Parameter(torch.zeros(self.layout.n_cross))

    @property
    def capacity(self) -> int:
        return self.layout.n_free

    def prior(self):
        L = self.layout.scale_tril(self.prior_log_diag, self.prior_within, self.prior_cross)
        return self.latent_law(self.prior_loc, L)

    def _unary(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-modality features (B, M, H), means (B, D), log-diagonal (B, D) and within-block entries."""
        d = self.config.latent_dim
        features = self.trunks(x)
        out = self.heads(features)
        mu, log_diag = out[..., :d].flatten(-2), out[..., d : 2 * d].flatten(-2)
        return features, mu, log_diag, self.layout.select_within(out[..., 2 * d :])

    def posterior(self, x: torch.Tensor):
        """q(z | x_1..x_M): unary blocks from each modality, cross blocks from the global encoder."""
        features, mu, log_diag, within = self._unary(x)
        cross = self.global_encoder(features.flatten(-2))
        return self.latent_law(mu, self.layout.scale_tril(log_diag, within, cross))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder means, (..., D) -> (..., M, F): modality i from its own block z_i."""
        return self.decoders(z.unflatten(-1, (self.config.n_modalities, self.config.latent_dim)))

    def loss(self, x: torch.Tensor) -> LossOutput:
        q = self.posterior(x)
        z = q.rsample()
        recon = self.likelihood.log_prob(x, self.decode(z)).sum(-1)
        kl = kl_divergence(q, self.prior())
        loss = (-recon + self.beta * kl).mean()
        return LossOutput(loss, {"recon": -recon.mean().item(), "kl": kl.mean().item()})

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.decode(self.prior().sample((n,)))

    @torch.no_grad()
    def conditional_sample(self, x: torch.Tensor, observed: list[int], n_per: int) -> torch.Tensor:
        """Generate the missing modalities given the observed ones.

        The observed blocks are drawn from their unimodal posterior factors N(mu_i, L_ii L_ii^T), which
        need only x_i (the cross blocks of q need every modality, so q itself is unavailable), or set to
        their means mu_i with ``conditional_latent="mean"``; the missing
        blocks are then drawn from the learned prior's Gaussian conditional p(z_miss | z_obs)
        (Proposition 1). The prior is the model's joint law of the latents and the ELBO pulls the aggregate
        posterior onto it, so its conditional is the dependence structure the model learned; it needs no
        extra network and no cross-modal training.
        """
        c = self.config
        observed = sorted(observed)
        missing = [i for i in range(c.n_modalities) if i not in observed]
        x_in = torch.zeros_like(x)
        x_in[:, observed] = x[:, observed]
        obs_idx = block_indices(observed, c.latent_dim, x.device)
        z_obs = self.observed_latents(x_in, observed, n_per)
        z = torch.empty(*z_obs.shape[:2], self.layout.dim, device=x.device, dtype=x.dtype)
        z[..., obs_idx] = z_obs
        z[..., block_indices(missing, c.latent_dim, x.device)] = self.sample_missing(observed, z_obs)
        out = self.decode(z)
        out[:, :, observed] = x[:, None, observed]
        return out

    def observed_latents(self, x_in: torch.Tensor, observed: list[int], n_per: int) -> torch.Tensor:
        """The observed blocks' latents (B, n_per, |o| d) from their unimodal posterior factors
        N(mu_i, L_ii L_ii^T), or their means with ``conditional_latent="mean"``."""
        c = self.config
        _, mu, log_diag, within = self._unary(x_in)
        if c.conditional_latent == "mean":
            return mu[:, None, block_indices(observed, c.latent_dim, x_in.device)].expand(-1, n_per, -1)
        unary = self.latent_law(mu, self.layout.scale_tril(log_diag, within, None))
        return unary.marginal(observed, c.latent_dim).sample((n_per,)).transpose(0, 1)

    def sample_missing(self, observed: list[int], z_obs: torch.Tensor) -> torch.Tensor:
        """Draw the missing latent blocks given the observed ones, (..., |o| d) -> (..., |m| d)."""
        return self.prior().condition(observed, z_obs, self.config.latent_dim).sample()

    @torch.no_grad()
    def kl_per_block(self, x: torch.Tensor) -> torch.Tensor:
        q, p = self.posterior(x), self.prior()
        d = self.config.latent_dim
        return torch.stack(
            [kl_divergence(q.marginal([i], d), p.marginal([i], d)).mean() for i in range(self.config.n_modalities)]
        )
