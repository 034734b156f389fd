"""What the baselines (MVAE, MMVAE, MoPoE-VAE, MMVAE+) share: unimodal experts over a shared latent z and,
when factorised, modality-specific latents w_m; decoders p(x_m | z, w_m); standard priors.

A model sees unimodal posteriors q(z | x_m) (and q(w_m | x_m)) for every modality at once, shaped
(..., M, D); how they are combined (product, mixture, mixture of products) is each model's own business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.distributions import Distribution, kl_divergence

from mrfbench.errors import UsageError, bounded
from mrfbench.models.base import ModelConfig, MultimodalVAE, conditional_output
from mrfbench.models.latent import factorised, standard
from mrfbench.models.networks import GroupedMLP, Likelihood, modality_decoder, modality_encoder


@dataclass
class ExpertsConfig(ModelConfig):
    """``dist`` sets prior, posterior and likelihood; ``specific_dim`` > 0 adds modality-specific latents.

    The paper's copula setting (Appendix C.2): latent 3 per modality, factorised, capacity 48."""

    latent_dim: int = 3
    dist: Literal["gaussian", "laplace"] = "gaussian"
    specific_dim: int = bounded(0, ge=0, label="specific latent dimension")
    likelihood: Literal["gaussian", "laplace"] | None = None  # always ``dist``'s

    def __post_init__(self):
        super().__post_init__()
        if self.likelihood not in (None, self.dist):
            raise UsageError(f"the likelihood of {self.dist} experts is {self.dist}: set dist, not likelihood "
                             f"(got likelihood {self.likelihood})")
        self.likelihood = self.dist


@dataclass
class Posteriors:
    """Unimodal posteriors for a batch: shared q(z | x_m) and, if factorised, q(w_m | x_m); both (..., M, D)."""

    shared: Distribution
    specific: Distribution | None


class ExpertsVAE(MultimodalVAE):
    """Base of the baselines: per-modality encoders and decoders (the paper's Table 3 for the copula)."""

    config_class = ExpertsConfig

    def __init__(self, config: ExpertsConfig):
        super().__init__(config)
        c = config
        m, h = c.n_modalities, c.hidden
        self.trunks = modality_encoder(c, h)
        self.heads = GroupedMLP(m, [h, 2 * (c.latent_dim + c.specific_dim)])
        self.decoders = modality_decoder(c, c.latent_dim + c.specific_dim)
        self.likelihood = Likelihood(c.likelihood, m, c.modality_dim, c.likelihood_scale, c.reconstruction)

    @property
    def factorised(self) -> bool:
        return self.config.specific_dim > 0

    @property
    def capacity(self) -> int:
        """Parameters of the latent distributions the encoders emit for one tuple (location and scale of
        every shared and specific dimension of every modality): 4 x (3 + 3) x 2 = 48 on the copula."""
        c = self.config
        return 2 * c.n_modalities * (c.latent_dim + c.specific_dim)

    def encode(self, x: torch.Tensor) -> Posteriors:
        c = self.config
        out = self.heads(self.trunks(x))
        d, s = c.latent_dim, c.specific_dim
        shared = factorised(c.dist, out[..., :d], out[..., d : 2 * d])
        specific = factorised(c.dist, out[..., 2 * d : 2 * d + s], out[..., 2 * d + s :]) if s else None
        return Posteriors(shared, specific)

    def decode(self, z: torch.Tensor, w: torch.Tensor | None = None, modalities: list[int] | None = None) -> torch.Tensor:
        """Decoder means (..., M, F) from per-modality inputs z (..., M, D) and w (..., M, S); only
        ``modalities`` (..., len(modalities), F) when given."""
        inputs = z if w is None else torch.cat([z, w.expand(*z.shape[:-1], -1)], -1)
        return self.decoders(inputs if modalities is None else inputs[..., modalities, :], modalities)

    def per_modality(self, z: torch.Tensor) -> torch.Tensor:
        """A shared latent (..., D) handed to every decoder, (..., M, D)."""
        return z.unsqueeze(-2).expand(*z.shape[:-1], self.config.n_modalities, z.shape[-1])

    def reconstruction(self, x: torch.Tensor, mean: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x_m | .) per modality, (..., M); ``mask`` marks the terms that count (for the scale fit)."""
        return self.likelihood.log_prob(x, mean, mask)

    def prior_sample(self, shape: tuple[int, ...], dim: int) -> torch.Tensor:
        ref = torch.empty(*shape, dim, device=next(self.parameters()).device)
        return standard(self.config.dist, ref).sample()

    @torch.no_grad()
    def sample(self, n: int, diagnostics: dict | None = None) -> torch.Tensor:
        c = self.config
        z = self.prior_sample((n,), c.latent_dim)
        w = self.prior_sample((n, c.n_modalities), c.specific_dim) if self.factorised else None
        return self.decode(self.per_modality(z), w)

    def fill_specific(self, post: Posteriors, observed: torch.Tensor, n_per: int) -> torch.Tensor | None:
        """w for conditional generation, (B, n_per, M, S): the observed modalities' own posterior samples,
        prior samples for the missing ones (nothing about them is known)."""
        if not self.factorised:
            return None
        own = post.specific.sample((n_per,)).transpose(0, 1)
        prior = self.prior_sample(tuple(own.shape[:-1]), self.config.specific_dim)
        return torch.where(observed[:, None], own, prior)

    def decode_given(self, x: torch.Tensor, observed: list[int], post: Posteriors, z: torch.Tensor) -> torch.Tensor:
        """Conditional generations (B, n_per, M, F) from shared latents z (B, n_per, D): w_m as in
        ``fill_specific``, the observed columns copied from x."""
        mask = observed_mask(observed, self.config.n_modalities, x.device)
        missing = [m for m in range(self.config.n_modalities) if m not in observed]
        w = self.fill_specific(post, mask, z.shape[1])
        return conditional_output(x, missing, self.decode(self.per_modality(z), w, missing))

    def prior_kl(self, q: Distribution) -> torch.Tensor:
        """KL(q || standard prior) summed over the last (latent) dimension."""
        return kl_divergence(q, standard(self.config.dist, q.loc)).sum(-1)

    def shared_kl(self, post: Posteriors) -> torch.Tensor:
        """KL to the prior of each modality's unimodal posterior over the shared latent, (B, M): the expert."""
        return self.prior_kl(post.shared)

    @torch.no_grad()
    def kl_per_block(self, x: torch.Tensor) -> torch.Tensor:
        """Mean KL of each modality's unimodal posterior (shared and specific parts) to the prior, (M,)."""
        post = self.encode(x)
        kl = self.shared_kl(post)
        if post.specific is not None:
            kl = kl + self.prior_kl(post.specific)
        return kl.mean(0)


def observed_mask(observed: list[int], n_modalities: int, device) -> torch.Tensor:
    mask = torch.zeros(n_modalities, dtype=torch.bool, device=device)
    mask[list(observed)] = True
    return mask
