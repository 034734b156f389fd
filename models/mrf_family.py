"""The MRF MVAE family (paper Sec. 3.1): a prior and a posterior part over M latent blocks
(``mrf_parts``), and each modality decoded from its own block, so all dependence between modalities has to
live in the latent law. Conditional generation draws the observed blocks from the posterior's unimodal
factors (which need only the observed modalities) and the missing blocks from the prior given them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mrfbench.errors import bounded
from mrfbench.models.base import ModelConfig, MultimodalVAE, conditional_output
from mrfbench.models.latent import CholeskyLayout, block_indices
from mrfbench.models.networks import Likelihood, modality_decoder


@dataclass
class MRFFamilyConfig(ModelConfig):
    conditional_latent: Literal["sample", "mean"] = "sample"  # observed blocks in conditional generation


@dataclass
class EnergyPriorConfig(MRFFamilyConfig):
    """Options of the energy-based prior (``mrf_parts.EnergyPrior``) and its Metropolis-Hastings sampling."""

    conditional_latent: Literal["sample", "mean"] = "mean"  # "mean": one chain per tuple, "sample": per draw
    potential_hidden: int = bounded(32, ge=1)  # width of the potential MLPs (the paper used 1024 for 8-D blocks of images)
    confinement: float = bounded(1.0, ge=0)  # precision of the Gaussian base measure in the prior energy (0: none)
    n_importance: int = bounded(8, ge=1)  # posterior samples per data point
    pcd_chains: int = bounded(512, ge=1)  # persistent chains for E_p[grad E]
    pcd_sweeps: int = bounded(5, ge=1)  # Metropolis-within-Gibbs sweeps the chains advance per training step
    pcd_restart: float = bounded(0.05, ge=0, le=1)  # fraction of persistent chains restarted from the base measure each step
    mh_chains: int = bounded(16_384, ge=1)  # parallel chains for prior sampling
    mh_burn_in: int = bounded(200, ge=0, label="mh burn-in")
    mh_thin: int = bounded(5, ge=1)
    mh_step: float = bounded(0.5, gt=0)
    collapse_samples: int = bounded(20_000, ge=1)  # prior samples for the per-block KL of the collapse report


LEGACY_KEYS = {  # checkpoint keys written before the family was built from parts -> their parts' keys
    "trunks.": "posterior_net.encoder.trunks.", "heads.": "posterior_net.encoder.heads.",
    "global_encoder.": "posterior_net.global_encoder.", "prior_loc": "prior_net.loc",
    "prior_log_diag": "prior_net.log_diag", "prior_within": "prior_net.within", "prior_cross": "prior_net.cross",
    "energy.unary.": "prior_net.energy.unary.", "energy.pairwise.": "prior_net.energy.pairwise.net.",
}


def _legacy_keys(module, state_dict, prefix, *args) -> None:
    for key in list(state_dict):
        for old, new in LEGACY_KEYS.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
                break


class MRFFamilyMVAE(MultimodalVAE):
    """A prior part and a posterior part (built by ``posterior`` and ``prior`` from the model's Cholesky
    layout, in that order), the modality decoders and the likelihood."""

    config_class = MRFFamilyConfig

    def __init__(self, config: MRFFamilyConfig, layout: CholeskyLayout,
                 posterior: Callable[[CholeskyLayout], nn.Module], prior: Callable[[CholeskyLayout], nn.Module]):
        super().__init__(config)
        self.layout = layout
        self.posterior_net = posterior(layout)
        self.decoders = modality_decoder(config, config.latent_dim)
        self.likelihood = Likelihood(config.likelihood, config.n_modalities, config.modality_dim, config.likelihood_scale,
                                     config.reconstruction)
        self.prior_net = prior(layout)
        self.register_load_state_dict_pre_hook(_legacy_keys)

    @property
    def capacity(self) -> int:
        return self.layout.n_free

    def decode(self, z: torch.Tensor, modalities: list[int] | None = None) -> torch.Tensor:
        """Decoder means, (..., D) -> (..., M, F): modality i from its own block z_i; only ``modalities``
        (..., len(modalities), F) when given."""
        blocks = z.unflatten(-1, (self.config.n_modalities, self.config.latent_dim))
        return self.decoders(blocks if modalities is None else blocks[..., modalities, :], modalities)

    @torch.no_grad()
    def sample(self, n: int, diagnostics: dict | None = None) -> torch.Tensor:
        return self.decode(self.sample_latents(n, diagnostics))

    @torch.no_grad()
    def sample_latents(self, n: int, diagnostics: dict | None = None) -> torch.Tensor:
        """n prior draws of the latents, (n, D); the prior part's sampler figures go into ``diagnostics``."""
        z, found = self.prior_net.sample(n)
        if diagnostics is not None:
            diagnostics.update(found)
        return z

    def sample_missing(self, observed: list[int], z_obs: torch.Tensor, diagnostics: dict | None = None) -> torch.Tensor:
        """The missing latent blocks given the observed ones from the prior part, (B, n_per, |o| d) ->
        (B, n_per, |m| d); the prior part's sampler figures go into ``diagnostics``."""
        z, found = self.prior_net.sample_missing(observed, z_obs)
        if diagnostics is not None:
            diagnostics.update(found)
        return z

    def observed_latents(self, x: torch.Tensor, observed: list[int], n_per: int) -> torch.Tensor:
        """The observed blocks' latents (B, n_per, |o| d) from the posterior's unimodal factors (or their
        means with ``conditional_latent="mean"``): only the ``observed`` (sorted) modalities of x are read."""
        return self.posterior_net.observed_latents(x, observed, n_per, self.config.conditional_latent == "mean")

    @torch.no_grad()
    def conditional_sample(self, x: torch.Tensor, observed: list[int], n_per: int,
                           diagnostics: dict | None = None) -> torch.Tensor:
        """Generate the missing modalities given the observed ones: the observed blocks from the posterior's
        unimodal factors (the cross blocks of q need every modality, so q itself is unavailable), the missing
        blocks from the prior's conditional given them (Proposition 1 for the GMRF): the prior is the model's
        joint law of the latents, and the objective pulls the aggregate posterior onto it."""
        c = self.config
        observed = sorted(observed)
        missing = [i for i in range(c.n_modalities) if i not in observed]
        z_obs = self.observed_latents(x, observed, n_per)
        z = torch.empty(*z_obs.shape[:2], self.layout.dim, device=x.device, dtype=x.dtype)
        z[..., block_indices(observed, c.latent_dim, x.device)] = z_obs
        z[..., block_indices(missing, c.latent_dim, x.device)] = self.sample_missing(observed, z_obs, diagnostics)
        return conditional_output(x, missing, self.decode(z, missing))


class EnergyPriorMVAE(MRFFamilyMVAE):
    """A family member whose prior is the energy-based MRF: sampled by Metropolis-Hastings, its acceptance
    rates the sampler figures of ``sample`` and ``conditional_sample``."""

    bf16_refused = "its Metropolis-Hastings chains and log-partition estimates need full precision"

    def advance_chains(self, start: torch.Tensor | None = None) -> torch.Tensor:
        return self.prior_net.advance_chains(start)
