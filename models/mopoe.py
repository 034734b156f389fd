"""MoPoE-VAE (Sutter et al. 2021): the joint posterior is the uniform mixture over all 2^M - 1 non-empty
subsets of the product of their experts. As in the authors' code, the prior expert joins only the product
of the full set; each datapoint of a batch is assigned one subset deterministically (equal shares, the
rest to the full set), all modalities are reconstructed from its z, and the KL is the mean of the subset
KLs (an upper bound of the mixture's). Factorised: w_m ~ q(w_m | x_m) for its own modality."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from mrfbench.models.base import LossOutput
from mrfbench.models.experts import ExpertsConfig, ExpertsVAE, Posteriors, observed_mask
from mrfbench.models.latent import noise, nonempty_subsets, product_of_experts
from mrfbench.models.registry import register_model


@dataclass
class MoPoEConfig(ExpertsConfig):
    pass


@register_model("mopoe")
class MoPoE(ExpertsVAE):
    """Mixture-of-products-of-experts multimodal VAE."""

    description = "MoPoE-VAE (Sutter et al. 2021): mixture over all subsets of products of experts"
    config_class = MoPoEConfig

    def __init__(self, config: MoPoEConfig):
        super().__init__(config)
        self.register_buffer("subsets", nonempty_subsets(config.n_modalities), persistent=False)

    def subset_posteriors(self, post: Posteriors, subsets: torch.Tensor) -> Distribution:
        """PoE of each subset's experts (prior expert for the full set only): batch shape (S, B, D)."""
        full = subsets.all(-1)[:, None, None]
        shared = post.shared
        return product_of_experts(self.config.dist, shared.loc, shared.scale, subsets[:, None, :], full)

    def component_of_each_datapoint(self, batch: int, device) -> torch.Tensor:
        """Deterministic split of the batch over the subsets: floor(B / S) each, the rest to the last."""
        n_sub = len(self.subsets)
        share = batch // n_sub
        index = torch.arange(batch, device=device) // max(share, 1)
        return index.clamp_max(n_sub - 1)

    def loss(self, x: torch.Tensor, beta_scale: float = 1.0) -> LossOutput:
        beta = self.config.beta * beta_scale
        post = self.encode(x)
        q = self.subset_posteriors(post, self.subsets)  # (S, B, D)
        pick = self.component_of_each_datapoint(len(x), x.device)
        rows = torch.arange(len(x), device=x.device)
        chosen = type(q)(q.loc[pick, rows], q.scale[pick, rows])
        z = noise.rsample(chosen)  # (B, D)
        w = noise.rsample(post.specific) if self.factorised else None
        recon = self.reconstruction(x, self.decode(self.per_modality(z), w)).sum(-1)
        kl = self.prior_kl(q).mean(0)  # mean over subsets, (B,)
        if self.factorised:
            kl = kl + self.prior_kl(post.specific).sum(-1)
        loss = (-recon + beta * kl).mean()
        return LossOutput(loss, {"recon": -recon.mean().detach(), "kl": kl.mean().detach()})

    @torch.no_grad()
    def conditional_sample(self, x: torch.Tensor, observed: list[int], n_per: int,
                           diagnostics: dict | None = None) -> torch.Tensor:
        """z from the observed subset's product of experts; w_m as in ``fill_specific``."""
        mask = observed_mask(observed, self.config.n_modalities, x.device)
        post = self.encode(x)
        z = self.subset_posteriors(post, mask[None]).sample((n_per,))[:, 0].transpose(0, 1)
        return self.decode_given(x, observed, post, z)
