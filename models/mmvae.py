"""MMVAE (Shi et al. 2019): the joint posterior is the uniform mixture of the unimodal experts, trained
with the stratified bound: for each modality r, K samples z ~ q(z | x_r) reconstruct every modality and
are weighted by log p(z) + sum_d log p(x_d | z) - log (1/M) sum_m q(z | x_m). ``objective`` picks the
stratified ELBO (mean over K; the default, with K = 1, as in Sutter et al.'s code, which the MRF paper used
for its MMVAE rows), the stratified IWAE or its DReG estimator (Shi et al.'s ``dreg --looser``).
beta multiplies log p(z) - log q (1 reproduces the original, which has no beta).

Factorised (MMVAE_f of Palumbo et al. 2023): u = [z, w_m]; w_r ~ q(w | x_r) is scored under the prior and
its own posterior, and x_d is reconstructed from [z_r, w_d] with the target's own posterior sample w_d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.distributions import Distribution

from mrfbench.errors import bounded
from mrfbench.models.base import LossOutput
from mrfbench.models.experts import ExpertsConfig, ExpertsVAE, Posteriors
from mrfbench.models.latent import dreg_surrogate, gradient_scaled, log_mean_exp, mixture_log_prob, noise, standard
from mrfbench.models.registry import register_model


@dataclass
class MMVAEConfig(ExpertsConfig):
    objective: Literal["elbo", "iwae", "dreg"] = "elbo"
    n_samples: int | None = bounded(None, ge=1, label="number of samples")  # K samples per modality; unset: 1
    # for "elbo", 10 for "iwae" and "dreg"

    def __post_init__(self):
        super().__post_init__()
        if self.n_samples is None:
            self.n_samples = 1 if self.objective == "elbo" else 10


def detached(dist: Distribution) -> Distribution:
    """The same distribution with its parameters cut from the graph (DReG's stop-gradient in log q)."""
    return type(dist)(dist.loc.detach(), dist.scale.detach())


@register_model("mmvae")
class MMVAE(ExpertsVAE):
    """Mixture-of-experts multimodal VAE."""

    description = "MMVAE (Shi et al. 2019): mixture of experts, stratified ELBO / IWAE / DReG"
    config_class = MMVAEConfig

    def cross_specific(self, post: Posteriors, w: torch.Tensor) -> torch.Tensor:
        """w used to decode x_d from the sample of modality r, (K, B, R, M, S): the target's own w_d."""
        return w.unsqueeze(-3).expand(*w.shape[:-2], self.config.n_modalities, *w.shape[-2:])

    def log_weights(self, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Stratified log-weights (K, B, R) and, for DReG with gradients, the gradient scales of the
        reparameterised samples they depend on (``gradient_scaled``)."""
        c = self.config
        post = self.encode(x)
        k = c.n_samples
        dreg = c.objective == "dreg" and torch.is_grad_enabled()
        z = noise.rsample(post.shared, (k,))  # (K, B, R, D): z[..., r, :] ~ q(z | x_r)
        scales = []
        if dreg:
            z, scale = gradient_scaled(z)
            scales.append(scale)
        scored = (lambda d: detached(d)) if c.objective == "dreg" else (lambda d: d)
        mixture = scored(post.shared)  # batch (B, M, D), evaluated at every z_r below
        log_q = mixture_log_prob(type(mixture)(mixture.loc.unsqueeze(-3), mixture.scale.unsqueeze(-3)),
                                 z.unsqueeze(-2), dim=-1)  # (K, B, R)
        log_p = standard(c.dist, z).log_prob(z).sum(-1)
        inputs = self.per_modality(z)  # (K, B, R, M, D): z_r to every decoder d
        w_in = None
        if self.factorised:
            w = noise.rsample(post.specific, (k,))  # (K, B, M, S): w_m ~ q(w | x_m)
            if dreg:
                w, scale = gradient_scaled(w)
                scales.append(scale)
            log_q = log_q + scored(post.specific).log_prob(w).sum(-1)
            log_p = log_p + standard(c.dist, w).log_prob(w).sum(-1)
            w_in = self.cross_specific(post, w)
        recon = self.reconstruction(x.unsqueeze(-3), self.decode(inputs, w_in)).sum(-1)  # (K, B, R)
        return recon + beta * (log_p - log_q), scales

    def loss(self, x: torch.Tensor, beta_scale: float = 1.0) -> LossOutput:
        beta = self.config.beta * beta_scale
        log_w, scales = self.log_weights(x, beta)
        if self.config.objective == "elbo":
            bound = log_w.mean(0)
        elif self.config.objective == "iwae":
            bound = log_mean_exp(log_w, 0)
        else:
            bound = dreg_surrogate(log_w, scales, 0)
        loss = -bound.mean(-1).mean()
        return LossOutput(loss, {"bound": log_mean_exp(log_w.detach(), 0).mean().detach()})

    @torch.no_grad()
    def conditional_sample(self, x: torch.Tensor, observed: list[int], n_per: int,
                           diagnostics: dict | None = None) -> torch.Tensor:
        """z from the mixture of the observed experts (one observed modality drawn per sample);
        w_m as in ``fill_specific``."""
        post = self.encode(x)
        z_all = post.shared.sample((n_per,)).transpose(0, 1)  # (B, n_per, M, D)
        obs = torch.as_tensor(sorted(observed), device=x.device)
        pick = obs[torch.randint(len(obs), z_all.shape[:2], device=x.device)]
        z = z_all.gather(2, pick[..., None, None].expand(-1, -1, 1, z_all.shape[-1])).squeeze(2)
        return self.decode_given(x, observed, post, z)
