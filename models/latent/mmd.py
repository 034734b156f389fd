"""Maximum mean discrepancy with a sum of RBF kernels (the ALMRF objective)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

MMD_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a_i - b_j|^2 for a (n, d) and b (n', d), by one matrix product (as ``torch.cdist`` computes it for
    large sets), without the square root and the square that taking cdist's distances would add."""
    return (a.square().sum(-1, keepdim=True) + b.square().sum(-1) - 2 * a @ b.T).clamp_min(0)


class KernelMean(torch.autograd.Function):
    """mean_ij sum_s exp(-d_ij / (2 s)) / S over S ``scales``, with its derivative in closed form: the
    backward pass is one product instead of one per operation of the forward. A scale half the one before
    is reached by squaring that kernel (one exp for the default scales, not five). It also returns the
    slope the backward pass uses (vmap, which packs use, builds its own rule from these)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(d: torch.Tensor, scales: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        ordered = sorted(scales, reverse=True)
        kernel = torch.exp(-d / (2 * ordered[0]))
        total, slope = kernel.clone(), kernel / (-2 * ordered[0])
        for wider, scale in zip(ordered, ordered[1:]):
            kernel = kernel.square() if wider == 2 * scale else torch.exp(-d / (2 * scale))
            total += kernel
            slope.add_(kernel, alpha=-1 / (2 * scale))
        return total.sum() / (d.numel() * len(scales)), slope

    @staticmethod
    def setup_context(ctx, inputs, output):
        d, scales = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.n_terms = d.numel() * len(scales)

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _slope_grad):
        (slope,) = ctx.saved_tensors
        return grad * slope / ctx.n_terms, None


def kernel_mean(d: torch.Tensor, scales: tuple[float, ...]) -> torch.Tensor:
    return KernelMean.apply(d, scales)[0]


@functools.lru_cache(maxsize=8)
def upper_triangle(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the strictly upper triangle of an n x n matrix (built once per size)."""
    return tuple(torch.triu_indices(n, n, 1, device=device))


def pooled_median(xx: torch.Tensor, yy: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """The lower median (``torch.median``'s) of the pooled matrix [[xx, xy], [xy', yy]] of squared distances
    from its blocks: its diagonal is zero and every other entry comes twice, so it is an order statistic of
    the upper triangles and the cross block alone (half the entries), found by a partial sort."""
    n, m = len(xx), len(yy)
    upper = torch.cat([xx[upper_triangle(n, xx.device)], yy[upper_triangle(m, yy.device)], xy.flatten()])
    zeros, k = n + m, ((n + m) ** 2 - 1) // 2  # sorted pooled: the zeros, then each upper entry twice
    if k < zeros:
        return xx.new_zeros(())
    rank = (k - zeros) // 2
    if upper.device.type != "cpu" or is_batched(upper):  # stay on the device (no host sync), or in a pack
        return upper.kthvalue(rank + 1).values
    return torch.as_tensor(np.partition(upper.numpy(), rank)[rank])  # NumPy's partial sort: 2x torch's here


def is_batched(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is one member's view inside a pack's vmap (its values have no NumPy array)."""
    return torch._C._functorch.is_batchedtensor(tensor)


def rbf_mmd2(x: torch.Tensor, y: torch.Tensor, scales: Sequence[float] = MMD_SCALES) -> torch.Tensor:
    """Squared MMD between the samples x (n, d) and y (n', d) (Eq. 35, biased V-statistic, so >= 0 and 0 for
    identical sets) with a sum of RBF kernels exp(-|a - b|^2 / (2 s h^2)) over ``scales`` s, h^2 the median
    squared distance of the pooled samples (detached): the median heuristic, widened and narrowed so the
    kernel sees both the bulk and the tails whatever the latent scale. The pooled distance matrix is taken
    in its blocks (x with x, y with y, x with y), the cross block once."""
    xx, yy, xy = squared_distances(x, x), squared_distances(y, y), squared_distances(x, y)
    with torch.no_grad():
        h2 = pooled_median(xx, yy, xy).clamp_min(1e-6)
    scales = tuple(scales)
    return kernel_mean(xx / h2, scales) + kernel_mean(yy / h2, scales) - 2 * kernel_mean(xy / h2, scales)
