"""The interface every model implements, so the trainer, evaluator and CLI stay model-agnostic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mrfbench.errors import UsageError, bounded, check_fields


@dataclass
class ModelConfig:
    """Fields every model shares; ``n_modalities`` and ``modality_dim`` come from the data set."""

    n_modalities: int = bounded(4, ge=2)
    modality_dim: int = bounded(2, ge=1)
    latent_dim: int = bounded(2, ge=1, label="latent dimension")
    beta: float = bounded(1.0, gt=0)
    likelihood: Literal["gaussian", "laplace"] = "gaussian"
    likelihood_scale: Literal["optimal", "learned", "unit"] = "optimal"  # the batch's maximum-likelihood scale,
    # learned, or 1
    reconstruction: Literal["sum", "mean"] = "sum"  # the log-likelihood summed over a modality's features, or
    # averaged over them (the paper's image beta grid presupposes "mean")
    hidden: int = bounded(256, ge=1)
    architecture: Literal["mlp", "conv"] = "mlp"  # modality encoders/decoders: mlp, or conv for C x 28 x 28 images
    mlp_layers: int = bounded(3, ge=2)  # linear layers of an mlp encoder (with its heads) and decoder: 3 on the copula
    # data (Table 3), 4 with hidden 1024 on MNIST-3 (Appendix D.2)

    def __post_init__(self):
        check_fields(self)
        if self.architecture == "conv" and self.modality_dim % 784:
            raise UsageError(f"the conv architecture needs C x 28 x 28 modalities, got {self.modality_dim} features")


@dataclass
class LossOutput:
    """The scalar to minimise and named detached terms (per-example means, 0-d tensors: reading them is left
    to the caller, so a training step never waits on the device) for logging."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


class MultimodalVAE(nn.Module):
    """Base class: data tensors are (batch, modalities, features)."""

    name: str = ""
    description: str = ""
    experimental: bool = False  # listed as such by `mrfbench models`
    bf16_refused: str | None = None  # why the model cannot train under bfloat16 autocast (None: it can)
    config_class: type[ModelConfig] = ModelConfig

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def loss(self, x: torch.Tensor, beta_scale: float = 1.0) -> LossOutput:
        """Training objective on a batch (negative beta-ELBO or the model's own), with the KL weight
        ``config.beta * beta_scale`` (the trainer's KL warm-up ramps ``beta_scale`` from 0 to 1)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, beta_scale: float | torch.Tensor = 1.0) -> LossOutput:
        """``loss``: the call ``torch.func.functional_call`` makes when a pack runs the model with each
        member's parameters."""
        return self.loss(x, beta_scale)

    @torch.no_grad()
    def sample(self, n: int, diagnostics: dict | None = None) -> torch.Tensor:
        """n unconditional generations, (n, M, F). A model whose sampler has figures of its own (MCMC
        acceptance rates) adds them to ``diagnostics`` when given."""
        raise NotImplementedError

    @torch.no_grad()
    def conditional_sample(self, x: torch.Tensor, observed: list[int], n_per: int,
                           diagnostics: dict | None = None) -> torch.Tensor:
        """n_per generations per tuple given the ``observed`` modalities of x: (B, n_per, M, F); its
        sampler's figures go into ``diagnostics`` as ``sample``'s do.

        Only the observed columns of x are read; they are copied into the output unchanged."""
        raise NotImplementedError

    @torch.no_grad()
    def kl_per_block(self, x: torch.Tensor) -> torch.Tensor:
        """Mean KL between posterior and prior of each modality's latent block, (M,): ~0 means collapse."""
        raise NotImplementedError

    @property
    def capacity(self) -> int:
        """Free parameters of one latent distribution (the paper's capacity figure)."""
        raise NotImplementedError


def conditional_output(x: torch.Tensor, missing: list[int], generated: torch.Tensor) -> torch.Tensor:
    """Conditional generations (B, n_per, M, F): the ``missing`` modalities from ``generated``
    (B, n_per, |missing|, F), the others copied from x (B, M, F)."""
    out = x[:, None].expand(-1, generated.shape[1], *x.shape[1:]).clone()
    out[:, :, missing] = generated
    return out
