"""Building blocks shared by every model: per-modality MLPs vectorised over modalities, likelihoods."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Laplace, Normal

from mrfbench.errors import UsageError

NARROW = 16  # outputs up to which inference multiplies transposed: oneDNN's batched matmul is 2-5x faster
# with the few outputs as rows (a copula decoder's last layer) than as columns, and 3x faster again with
# those rows contiguous (a copy of a few kB); in training it is not


class GroupedLinear(nn.Module):
    """One independent linear layer per modality on group-major input (G, N, in) -> (G, N, out); with
    ``groups`` (modality indices), x holds those modalities only and only their layers apply."""

    def __init__(self, n_groups: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(n_groups, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_groups, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, groups: list[int] | None = None) -> torch.Tensor:
        return grouped_affine(x, *self.weights(groups))

    def weights(self, groups: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of all modalities, or of ``groups`` only."""
        return (self.weight, self.bias) if groups is None else (self.weight[groups], self.bias[groups])


def grouped_affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (G, N, in) W (G, in, out) + b (G, 1, out)."""
    if weight.shape[-1] <= NARROW and not torch.is_grad_enabled():  # (W^T x^T)^T: the same product
        return torch.baddbmm(bias.mT.contiguous(), weight.mT.contiguous(), x.mT).mT
    return torch.baddbmm(bias, x, weight)


INFERENCE_BLOCK = 256  # rows a grouped MLP takes at a time when no gradient is kept (scoring a million
# samples): layer outputs that stay in cache decode the copula 1.4-1.6x faster than 100k-row chunks, and
# 256 rows (with the narrow last layer transposed) 1.14x faster than 1,024 (median of 5 x 200k decodes on 2
# idle cores: 0.70 s against 0.80); the same values to float rounding


class GroupedMLP(nn.Module):
    """Per-modality MLPs (ReLU between layers, linear last layer, optional ReLU after it) applied to
    (..., M, in) -> (..., M, out) as one batched matmul per layer; with ``groups`` (modality indices), x
    holds those modalities only, (..., len(groups), in), and only their MLPs run."""

    def __init__(self, n_groups: int, sizes: list[int], final_relu: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(GroupedLinear(n_groups, a, b))
            if i < len(sizes) - 2 or final_relu:
                layers.append(nn.ReLU(inplace=True))  # on the matmul's fresh output: no extra tensor
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, groups: list[int] | None = None) -> torch.Tensor:
        batch = x.shape[:-2]
        grouped = x.reshape(-1, *x.shape[-2:]).transpose(0, 1).contiguous()  # (M, N, in)

        weights = [layer.weights(groups) if isinstance(layer, GroupedLinear) else None for layer in self.net]

        def layers(h: torch.Tensor) -> torch.Tensor:  # the weights of ``groups`` taken once, not per block
            for layer, weight in zip(self.net, weights):
                h = layer(h) if weight is None else grouped_affine(h, *weight)
            return h

        if torch.is_grad_enabled() or grouped.shape[1] <= INFERENCE_BLOCK:
            out = layers(grouped)
        else:
            out = torch.cat([layers(block) for block in grouped.split(INFERENCE_BLOCK, dim=1)], dim=1)
        return out.transpose(0, 1).reshape(*batch, x.shape[-2], -1)


class ConvEncoder(nn.Module):
    """Per-modality convolutional encoders for C x 28 x 28 images (the MoPoE / MMVAE+ PolyMNIST layout:
    three stride-2 convolutions 32 -> 64 -> 128, then linear), all modalities at once as grouped
    convolutions: (..., M, C * 784) -> (..., M, out), ReLU output like the MLP trunks; with ``groups``
    (modality indices), x holds those modalities only and only their encoders run."""

    def __init__(self, n_groups: int, channels: int, out: int):
        super().__init__()
        m = n_groups
        self.channels = channels
        self.convs = nn.Sequential(
            nn.Conv2d(m * channels, m * 32, 3, 2, 1, groups=m), nn.ReLU(),  # 28 -> 14
            nn.Conv2d(m * 32, m * 64, 3, 2, 1, groups=m), nn.ReLU(),  # 14 -> 7
            nn.Conv2d(m * 64, m * 128, 3, 2, 1, groups=m), nn.ReLU())  # 7 -> 4
        self.linear = GroupedLinear(m, 128 * 16, out)

    def forward(self, x: torch.Tensor, groups: list[int] | None = None) -> torch.Tensor:
        batch, m = x.shape[:-2], x.shape[-2]
        h = grouped_layers(self.convs, x.reshape(-1, m * self.channels, 28, 28), groups).reshape(-1, m, 128 * 16)
        return torch.relu(self.linear(h.transpose(0, 1).contiguous(), groups)).transpose(0, 1).reshape(*batch, m, -1)


class ConvDecoder(nn.Module):
    """Per-modality transposed-convolution decoders, the mirror of ``ConvEncoder``:
    (..., M, latent) -> (..., M, C * 784); with ``groups`` (modality indices), z holds those modalities
    only and only their decoders run."""

    def __init__(self, n_groups: int, latent: int, channels: int):
        super().__init__()
        m = n_groups
        self.channels = channels
        self.linear = GroupedLinear(m, latent, 128 * 16)
        self.deconvs = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(m * 128, m * 64, 3, 2, 1, groups=m),  # 4 -> 7
            nn.ReLU(), nn.ConvTranspose2d(m * 64, m * 32, 4, 2, 1, groups=m),  # 7 -> 14
            nn.ReLU(), nn.ConvTranspose2d(m * 32, m * channels, 4, 2, 1, groups=m))  # 14 -> 28

    def forward(self, z: torch.Tensor, groups: list[int] | None = None) -> torch.Tensor:
        batch, m = z.shape[:-2], z.shape[-2]
        h = self.linear(z.reshape(-1, m, z.shape[-1]).transpose(0, 1).contiguous(), groups).transpose(0, 1)
        return grouped_layers(self.deconvs, h.reshape(-1, m * 128, 4, 4), groups).reshape(*batch, m, self.channels * 784)


def grouped_layers(layers: nn.Sequential, h: torch.Tensor, groups: list[int] | None) -> torch.Tensor:
    """``layers`` (grouped convolutions, one group per modality, and activations) on h, or with ``groups``
    (modality indices) on h holding those modalities' channels only, with those groups' weights."""
    for layer in layers:
        if groups is None or not isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            h = layer(h)
            continue
        weight = layer.weight.unflatten(0, (layer.groups, -1))[groups].flatten(0, 1)
        bias = layer.bias.unflatten(0, (layer.groups, -1))[groups].flatten()
        if isinstance(layer, nn.ConvTranspose2d):
            h = F.conv_transpose2d(h, weight, bias, layer.stride, layer.padding, layer.output_padding, len(groups),
                                   layer.dilation)
        else:
            h = F.conv2d(h, weight, bias, layer.stride, layer.padding, layer.dilation, len(groups))
    return h




def modality_encoder(config, out: int) -> nn.Module:
    """The per-modality feature extractors a model's heads sit on: MLPs, or convolutions for images."""
    if config.architecture == "conv":
        return ConvEncoder(config.n_modalities, config.modality_dim // 784, out)
    sizes = [config.modality_dim] + [config.hidden] * (config.mlp_layers - 2) + [out]  # the heads add one layer
    return GroupedMLP(config.n_modalities, sizes, final_relu=True)


def modality_decoder(config, latent: int) -> nn.Module:
    """Per-modality decoders from ``latent`` dimensions to the modality's features."""
    if config.architecture == "conv":
        return ConvDecoder(config.n_modalities, latent, config.modality_dim // 784)
    sizes = [latent] + [config.hidden] * (config.mlp_layers - 1) + [config.modality_dim]
    return GroupedMLP(config.n_modalities, sizes)


def mlp(sizes: list[int]) -> nn.Sequential:
    """MLP with ReLU between layers and a linear last layer."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


LIKELIHOODS = {"gaussian": Normal, "laplace": Laplace}
SCALES = ("learned", "optimal", "unit")
REDUCTIONS = ("sum", "mean")


class Likelihood(nn.Module):
    """p(x_m | z) as Gaussian or Laplace around the decoder output, with a scale per coordinate that is
    a learned parameter, 1 (``scale="unit"``), or, with ``scale="optimal"``, its maximum-likelihood value on
    the batch (root mean square residual for Gaussian, mean absolute residual for Laplace), as in calibrated
    decoders (Rybkin et al. 2021): no slow climb of a learned scale from its initial value.

    ``reduction="mean"`` averages the log-density over a modality's features instead of summing it: the
    convention under which the paper's image beta grid (1e-4 to 2.5e-3) weighs the KL term (a squared-error
    loss averaged over pixels, as ``F.mse_loss`` computes it)."""

    def __init__(self, kind: str, n_modalities: int, n_features: int, scale: str = "learned",
                 reduction: str = "sum"):
        super().__init__()
        for name, value, valid in (("likelihood", kind, LIKELIHOODS), ("likelihood scale", scale, SCALES),
                                   ("reconstruction", reduction, REDUCTIONS)):
            if value not in valid:
                raise UsageError(f"unknown {name} '{value}'; valid: {', '.join(valid)}")
        self.kind, self.scale_mode, self.reduction = kind, scale, reduction
        if scale == "learned":
            self.log_scale = nn.Parameter(torch.zeros(n_modalities, n_features))

    def scale(self, x: torch.Tensor, loc: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-coordinate scale (M, F); the optimal one is fitted to the terms ``mask`` (..., M) marks."""
        if self.scale_mode == "learned":
            return self.log_scale.exp()
        if self.scale_mode == "unit":
            return torch.ones((), device=loc.device, dtype=loc.dtype)
        residual = (x - loc).detach()
        residual = residual.pow(2) if self.kind == "gaussian" else residual.abs()
        weight = torch.ones_like(residual) if mask is None else mask.unsqueeze(-1).expand_as(residual).to(residual)
        mle = (residual * weight).flatten(0, -3).sum(0) / weight.flatten(0, -3).sum(0).clamp_min(1.0)
        return (mle.sqrt() if self.kind == "gaussian" else mle).clamp_min(1e-4)

    def log_prob(self, x: torch.Tensor, loc: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Log-density per modality, summed (or averaged) over features: (..., M, F) -> (..., M)."""
        log_prob = LIKELIHOODS[self.kind](loc, self.scale(x, loc, mask)).log_prob(x)
        return log_prob.sum(-1) if self.reduction == "sum" else log_prob.mean(-1)
