"""MVAE (Wu & Goodman 2018): product of the unimodal experts and a prior expert, trained with the
sub-sampled objective: the joint ELBO, every unimodal ELBO and k random subsets of size 2..M-1, each ELBO
reconstructing only the modalities it sees. Factorised: each modality also has its own w_m (as DMVAE)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from mrfbench.errors import bounded
from mrfbench.models.base import LossOutput
from mrfbench.models.experts import ExpertsConfig, ExpertsVAE, Posteriors, observed_mask
from mrfbench.models.latent import noise, product_of_experts
from mrfbench.models.registry import register_model


@dataclass
class MVAEConfig(ExpertsConfig):
    n_random_subsets: int = bounded(1, ge=0, label="number of random subsets")  # k subsets of size 2..M-1
    # drawn each step (the celeba19 code's --approx-m)


@register_model("mvae")
class MVAE(ExpertsVAE):
    """Product-of-experts multimodal VAE."""

    description = "MVAE (Wu & Goodman 2018): product of experts with prior expert, sub-sampled ELBO"
    config_class = MVAEConfig

    def __init__(self, config: MVAEConfig):
        super().__init__(config)
        m = config.n_modalities
        middle = [c for size in range(2, m) for c in itertools.combinations(range(m), size)]
        # kept on the CPU, where the subsets are drawn: their layout is known there without waiting on the device
        self.middle_subsets = torch.tensor([[i in c for i in range(m)] for c in middle], dtype=torch.bool).reshape(-1, m)

    def joint(self, post: Posteriors, subsets: torch.Tensor) -> Distribution:
        """PoE(prior, q(z | x_m) for m in S) for each subset row (S, M): batch shape (S, B, D)."""
        shared = post.shared
        return product_of_experts(self.config.dist, shared.loc, shared.scale, subsets[:, None, :], True)

    def shared_kl(self, post: Posteriors) -> torch.Tensor:
        """Per modality, KL of PoE(prior, q(z | x_m)), the unimodal posterior, (B, M). The raw expert is not:
        a wide expert far from 0 barely moves the product, so its own huge KL would hide a collapse."""
        eye = torch.eye(self.config.n_modalities, dtype=torch.bool, device=post.shared.loc.device)
        q = self.joint(post, eye)  # (M, B, D)
        return self.prior_kl(q).T

    def training_subsets(self) -> torch.Tensor:
        """This step's subsets (S, M) on the CPU: all, each single modality, and random middle ones."""
        m = self.config.n_modalities
        rows = [torch.ones(1, m, dtype=torch.bool), torch.eye(m, dtype=torch.bool)]
        k = min(self.config.n_random_subsets, len(self.middle_subsets))
        if k:
            rows.append(self.middle_subsets[noise.permutation(len(self.middle_subsets))[:k]])
        return torch.cat(rows)

    def loss(self, x: torch.Tensor, beta_scale: float = 1.0) -> LossOutput:
        beta = self.config.beta * beta_scale
        post = self.encode(x)
        subsets = self.training_subsets()  # (S, M)
        index, valid = members_first(subsets, 2 + min(self.config.n_random_subsets, len(self.middle_subsets)))
        subsets, index, valid = (t.to(x.device, non_blocking=True) for t in (subsets, index, valid))
        q = self.joint(post, subsets)
        z = noise.rsample(q)  # (S, B, D)
        inputs = z[index].transpose(1, 2)  # (C, B, M, D)
        w = noise.rsample(post.specific) if self.factorised else None
        valid_b = valid[:, None, :].expand(-1, len(x), -1)  # (C, B, M)
        recon = (self.reconstruction(x, self.decode(inputs, w), valid_b) * valid_b).sum((0, 2))  # (B,)
        kl = self.prior_kl(q)  # (S, B)
        if self.factorised:
            kl_w = self.prior_kl(post.specific)  # (B, M)
            kl = kl + (subsets[:, None, :] * kl_w).sum(-1)
        kl = kl.sum(0)
        loss = (-recon + beta * kl).mean()
        return LossOutput(loss, {"recon": -recon.mean().detach(), "kl": kl.mean().detach()})

    @torch.no_grad()
    def conditional_sample(self, x: torch.Tensor, observed: list[int], n_per: int,
                           diagnostics: dict | None = None) -> torch.Tensor:
        """z from the product of the prior and the observed experts; w_m as in ``fill_specific``."""
        mask = observed_mask(observed, self.config.n_modalities, x.device)
        post = self.encode(x)
        z = self.joint(post, mask[None]).sample((n_per,))[:, 0].transpose(0, 1)  # (B, n_per, D)
        return self.decode_given(x, observed, post, z)


def members_first(subsets: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For subsets (S, M), column m of ``index`` (C, M) lists the subsets that hold modality m (padded with
    others, which ``valid`` marks False); C = ``rows``, at least the most subsets any modality is in (the full
    set, its single, and each random subset: known without reading the draws). Each ELBO reconstructs only
    its own modalities, so decoding these C rows instead of all S skips the terms that do not count."""
    index = torch.argsort((~subsets).to(torch.uint8), dim=0, stable=True)[: min(rows, len(subsets))]
    return index, subsets.gather(0, index)
