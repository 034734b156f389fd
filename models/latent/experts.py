"""Experts of the baselines: factorised Gaussian or Laplace laws, products and mixtures of experts, the
subsets they range over, and the DReG surrogate of importance-weighted bounds."""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution

FACTORISED = ("gaussian", "laplace")


def factorised(kind: str, loc: torch.Tensor, raw_scale: torch.Tensor) -> Distribution:
    """Diagonal Gaussian N(loc, exp(raw)) or Laplace(loc, softmax(raw) * D + 1e-6) as in the MMVAE code
    (Laplace scales sum to about D, so their mean is pinned near 1 and only their spread is learned)."""
    if kind == "gaussian":
        return torch.distributions.Normal(loc, (0.5 * raw_scale).exp())
    if kind == "laplace":
        return torch.distributions.Laplace(loc, raw_scale.softmax(-1) * raw_scale.shape[-1] + 1e-6)
    raise ValueError(f"unknown distribution '{kind}'; valid: {', '.join(FACTORISED)}")


def standard(kind: str, like: torch.Tensor) -> Distribution:
    """The standard prior N(0, 1) or Laplace(0, 1), shaped like ``like``."""
    zeros = torch.zeros_like(like)
    cls = torch.distributions.Normal if kind == "gaussian" else torch.distributions.Laplace
    return cls(zeros, torch.ones_like(like))


def product_of_experts(
    kind: str, loc: torch.Tensor, scale: torch.Tensor, present: torch.Tensor, prior_expert: bool | torch.Tensor = True
) -> Distribution:
    """Product of the factorised experts ``present`` along dim -2 (loc, scale: (..., E, D); present: bool,
    broadcastable to (..., E)), optionally times a standard prior expert (bool or per-row bool tensor).

    Gaussian experts multiply in closed form: precision-weighted mean, variance 1 / sum of precisions.
    Laplace experts have no closed-form product; each is replaced by the Gaussian of equal mean and variance
    (2 b^2), those are multiplied, and a Laplace with the product's mean and variance is returned."""
    var = scale.pow(2) * (2.0 if kind == "laplace" else 1.0)
    precision = present.unsqueeze(-1).to(loc.dtype) / var
    prior = torch.as_tensor(prior_expert, dtype=loc.dtype, device=loc.device)
    prior_precision = prior.reshape(*prior.shape, *([1] * (loc.dim() - 1 - prior.dim())))
    total = precision.sum(-2) + (1.0 if kind == "gaussian" else 0.5) * prior_precision
    mean = (precision * loc).sum(-2) / total
    if kind == "gaussian":
        return torch.distributions.Normal(mean, total.rsqrt())
    return torch.distributions.Laplace(mean, (0.5 / total).sqrt())


def nonempty_subsets(n: int) -> torch.Tensor:
    """All 2^n - 1 non-empty subsets of n modalities as a bool mask (2^n - 1, n), by size, full set last."""
    codes = torch.arange(1, 2**n)
    masks = (codes[:, None] >> torch.arange(n)) & 1
    order = sorted(range(len(codes)), key=lambda i: (int(masks[i].sum()), [-int(v) for v in masks[i]]))
    return masks[order].bool()


def log_mean_exp(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def mixture_log_prob(experts: Distribution, z: torch.Tensor, dim: int) -> torch.Tensor:
    """log (1/E) sum_e q_e(z): experts batched along ``dim`` of their batch shape, z broadcast against it;
    returns the log-density summed over the event (last) dimension with ``dim`` reduced."""
    return log_mean_exp(experts.log_prob(z).sum(-1), dim)


class ScaledGradient(torch.autograd.Function):
    """The sample itself, whose gradient is multiplied by ``scale`` (filled in place after the forward pass,
    once the importance weights are known: a tensor hook that works inside a pack's vmap too, where the rule
    below applies the function to every member's sample at once, so the scale it keeps is the members')."""

    @staticmethod
    def forward(sample: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return sample.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.scale = inputs[1]  # read at backward time, after ``dreg_surrogate`` has filled it

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (ctx.scale * grad).to(grad.dtype), None  # keeps bf16 grads bf16

    @staticmethod
    def vmap(info, in_dims, sample: torch.Tensor, scale: torch.Tensor):
        sample, scale = (t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape)
                         for t, d in zip((sample, scale), in_dims))
        return ScaledGradient.apply(sample, scale), 0


def gradient_scaled(sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample (to use instead of it) and the scale of its gradient, ones until ``dreg_surrogate`` sets it."""
    scale = torch.ones_like(sample)
    return ScaledGradient.apply(sample, scale), scale


def dreg_surrogate(log_w: torch.Tensor, scales: list[torch.Tensor], sample_dim: int) -> torch.Tensor:
    """Doubly reparameterised IWAE surrogate (Tucker et al. 2019) for log-weights over ``sample_dim``.

    ``log_w`` must be computed with the posterior parameters detached inside log q, from reparameterised
    samples taken through ``gradient_scaled``; their gradient ``scales`` (leading dims matching ``log_w``'s,
    or fewer trailing ones broadcast by it) are set to the normalised weights, so the encoder gets squared
    weights, the decoder and prior the weighted IWAE gradient. The returned value is the IWAE bound
    log mean_k w_k itself (so a validation loss, and the checkpoint chosen by it, mean something); only its
    gradient is DReG's."""
    with torch.no_grad():
        weights = torch.softmax(log_w, dim=sample_dim)
        for scale in scales:
            scale.copy_(weights.reshape(*weights.shape, *([1] * (scale.dim() - weights.dim()))).expand_as(scale))
    surrogate = (weights * log_w).sum(sample_dim)
    return log_mean_exp(log_w.detach(), sample_dim) + surrogate - surrogate.detach()
