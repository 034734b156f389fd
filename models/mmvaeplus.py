"""MMVAE+ (Palumbo et al. 2023): a shared z with a mixture-of-experts posterior plus modality-specific w_m.
When the sample of modality r reconstructs another modality d, w comes from an auxiliary prior r_d(w)
with a learned scale (free to grow wider than the prior's, unlike the softmax-pinned scale of the authors'
code), not from x_d, so z must carry what the modalities share. At test time a missing modality's w is
drawn from the prior p(w), as in the authors' code. Objective as MMVAE's (DReG by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.distributions import Distribution

from mrfbench.errors import UsageError
from mrfbench.models.experts import Posteriors
from mrfbench.models.latent import noise
from mrfbench.models.mmvae import MMVAE, MMVAEConfig
from mrfbench.models.registry import register_model


@dataclass
class MMVAEPlusConfig(MMVAEConfig):
    specific_dim: int = 3
    objective: Literal["elbo", "iwae", "dreg"] = "dreg"

    def __post_init__(self):
        super().__post_init__()
        if self.specific_dim < 1:
            raise UsageError("mmvaeplus needs modality-specific latents: specific_dim >= 1")


@register_model("mmvaeplus")
class MMVAEPlus(MMVAE):
    """MMVAE+ with auxiliary priors for the modality-specific latents."""

    description = "MMVAE+ (Palumbo et al. 2023): shared MoE latent + specific latents with auxiliary priors"
    config_class = MMVAEPlusConfig

    def __init__(self, config: MMVAEPlusConfig):
        super().__init__(config)
        # log-scale of r_d(w), per modality, initialised to the prior's scale 1
        self.aux_log_scale = nn.Parameter(torch.zeros(config.n_modalities, config.specific_dim))

    def auxiliary_prior(self) -> Distribution:
        cls = torch.distributions.Normal if self.config.dist == "gaussian" else torch.distributions.Laplace
        return cls(torch.zeros_like(self.aux_log_scale), self.aux_log_scale.exp())

    def cross_specific(self, post: Posteriors, w: torch.Tensor) -> torch.Tensor:
        """x_r from its own w_r, x_d (d != r) from w ~ r_d(w): (K, B, R, M, S)."""
        m = self.config.n_modalities
        aux = noise.rsample(self.auxiliary_prior(), (*w.shape[:-2], m))  # (K, B, R, M, S)
        own = w.unsqueeze(-2).expand(*w.shape[:-1], m, w.shape[-1])  # w_r for every target d
        diagonal = torch.eye(m, dtype=torch.bool, device=w.device)[..., None]
        return torch.where(diagonal, own, aux)
