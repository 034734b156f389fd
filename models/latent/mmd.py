"""Maximum mean discrepancy with a sum of RBF kernels (the ALMRF objective)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

MMD_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def rbf_mmd2(x: torch.Tensor, y: torch.Tensor, scales: Sequence[float] = MMD_SCALES) -> torch.Tensor:
    """Squared MMD between the samples x (n, d) and y (n', d) (Eq. 35, biased V-statistic, so >= 0 and 0 for
    identical sets) with a sum of RBF kernels exp(-|a - b|^2 / (2 s h^2)) over ``scales`` s, h^2 the median
    squared distance of the pooled samples (detached): the median heuristic, widened and narrowed so the
    kernel sees both the bulk and the tails whatever the latent scale."""
    pooled = torch.cat([x, y])
    sq = torch.cdist(pooled, pooled).pow(2)
    h2 = sq.detach().median().clamp_min(1e-6)
    kernel = sum(torch.exp(-sq / (2 * s * h2)) for s in scales) / len(scales)
    n = len(x)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()
