"""Full-covariance Gaussian with a (masked) Cholesky parameterisation: the GMRF's prior and posterior.

Everything is batched over leading dimensions. The latent vector of an M-modality model with d dimensions
per modality is the concatenation (z_1, ..., z_M) of D = M * d coordinates; "blocks" are modality indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.distributions import Distribution, constraints, register_kl

import mrfbench.models.latent.noise as noise


def broadcast_shapes(*shapes: Sequence[int]) -> torch.Size:
    """``torch.broadcast_shapes``, which imports torch's symbolic-shape machinery on first use (a third of
    a second of every command's start-up)."""
    return torch.Size(np.broadcast_shapes(*shapes))


class CholeskyLayout:
    """Where the free parameters of a lower-triangular factor L (D x D, D = n_blocks * block_dim) go.

    The diagonal of L is ``exp`` of free parameters (so Sigma = L L^T is positive definite); a fixed random
    ``sparsity`` fraction of the strictly-lower entries is masked to zero. The number of kept strictly-lower
    entries is floor((1 - sparsity) * D (D - 1) / 2): with 5 modalities x 16 dims and sparsity 0.84 a
    distribution then has 80 + 80 + 505 = 665 free parameters, the paper's figure.

    Strictly-lower entries are split into those inside a modality's diagonal block ("within", predicted by
    that modality's encoder, which emits all block_dim (block_dim - 1) / 2 of them; the masked ones are
    dropped by ``select_within``) and those between modalities ("cross", predicted by the global encoder).
    """

    def __init__(self, n_blocks: int, block_dim: int, sparsity: float = 0.0, seed: int = 0):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"masking sparsity must be in [0, 1), got {sparsity}")
        self.n_blocks, self.block_dim, self.sparsity = n_blocks, block_dim, sparsity
        self.dim = n_blocks * block_dim
        rows, cols = torch.tril_indices(self.dim, self.dim, offset=-1)
        n_off = rows.numel()
        n_keep = math.floor((1.0 - sparsity) * n_off + 1e-9)
        keep = torch.zeros(n_off, dtype=torch.bool)
        keep[torch.randperm(n_off, generator=torch.Generator().manual_seed(seed))[:n_keep]] = True
        cross = (rows // block_dim) != (cols // block_dim)
        self.cross_rows, self.cross_cols = rows[keep & cross], cols[keep & cross]
        # within-block entries in canonical order: block by block, then the block's own tril order
        r, c = torch.tril_indices(block_dim, block_dim, offset=-1)
        offsets = torch.arange(n_blocks).repeat_interleave(r.numel()) * block_dim
        within_rows, within_cols = r.repeat(n_blocks) + offsets, c.repeat(n_blocks) + offsets
        kept = torch.zeros(self.dim, self.dim, dtype=torch.bool)
        kept[rows[keep], cols[keep]] = True
        self.within_keep = kept[within_rows, within_cols]
        self.within_rows, self.within_cols = within_rows[self.within_keep], within_cols[self.within_keep]
        self._index = {"within_keep": self.within_keep, "within": torch.stack([self.within_rows, self.within_cols]),
                       "all": torch.stack([torch.cat([self.within_rows, self.cross_rows]),
                                           torch.cat([self.within_cols, self.cross_cols])])}
        self._on_device: dict[tuple[str, torch.device], torch.Tensor] = {}

    def _indices(self, name: str, device: torch.device) -> torch.Tensor:
        """An index tensor of the layout, moved to ``device`` once: "within_keep", or the (rows, cols) (2, n)
        of the kept strictly-lower entries "within" blocks or of "all" of them."""
        key = (name, torch.device(device))
        if key not in self._on_device:
            self._on_device[key] = self._index[name].to(device)
        return self._on_device[key]

    @property
    def n_within_per_block(self) -> int:
        """Within-block strictly-lower entries each modality's encoder emits (before masking)."""
        return self.block_dim * (self.block_dim - 1) // 2

    @property
    def n_within(self) -> int:
        return self.within_rows.numel()

    @property
    def n_cross(self) -> int:
        return self.cross_rows.numel()

    @property
    def n_free(self) -> int:
        """Free parameters of one distribution: mean, log-diagonal and kept strictly-lower entries of L."""
        return 2 * self.dim + self.n_within + self.n_cross

    def select_within(self, per_block: torch.Tensor) -> torch.Tensor:
        """Kept within-block entries from all of them, (..., n_blocks, n_within_per_block) -> (..., n_within)."""
        return per_block.flatten(-2)[..., self._indices("within_keep", per_block.device)]

    def scale_tril(self, log_diag: torch.Tensor, within: torch.Tensor, cross: torch.Tensor | None) -> torch.Tensor:
        """Assemble L (..., D, D) from its log-diagonal (..., D), kept within-block (..., n_within) and
        kept cross-block (..., n_cross) entries; ``cross=None`` gives a block-diagonal L."""
        L = torch.diag_embed(log_diag.exp())
        rows, cols = self._indices("within" if cross is None else "all", L.device)
        values = within if cross is None else torch.cat([within, cross], dim=-1)
        if rows.numel():
            L[..., rows, cols] = values.expand(*L.shape[:-2], -1)
        return L


def block_indices(blocks: Sequence[int], block_dim: int, device=None) -> torch.Tensor:
    """Coordinate indices of the given modality blocks."""
    blocks_t = torch.as_tensor(list(blocks), dtype=torch.long, device=device)
    return (blocks_t[:, None] * block_dim + torch.arange(block_dim, device=device)).reshape(-1)


class FullCovGaussian(Distribution):
    """N(loc, L L^T) with lower-triangular ``scale_tril`` L, batched over leading dimensions."""

    arg_constraints = {"loc": constraints.real_vector, "scale_tril": constraints.lower_cholesky}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor, validate_args: bool | None = False):
        batch_shape = broadcast_shapes(loc.shape[:-1], scale_tril.shape[:-2])
        self.loc = loc.expand(*batch_shape, -1)
        self.scale_tril = scale_tril.expand(*batch_shape, -1, -1)
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def covariance_matrix(self) -> torch.Tensor:
        return self.scale_tril @ self.scale_tril.mT

    @property
    def variance(self) -> torch.Tensor:
        return self.scale_tril.pow(2).sum(-1)

    def log_det_cov(self) -> torch.Tensor:
        return 2.0 * self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        eps = noise.normal(shape, self.loc.dtype, self.loc.device)
        return self.loc + (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        diff = (value - self.loc).unsqueeze(-1)
        L = self.scale_tril.expand(*diff.shape[:-2], -1, -1)
        white = torch.linalg.solve_triangular(L, diff, upper=False).squeeze(-1)
        d = self.loc.shape[-1]
        return -0.5 * (d * math.log(2 * math.pi) + white.pow(2).sum(-1)) - 0.5 * self.log_det_cov()

    def log_prob_each(self, value: torch.Tensor) -> torch.Tensor:
        """ln N(value_n; loc_b, cov_b) for every point (N, D) under every member of a 1-D batch (B,): (N, B).
        One inverse factor per member and two matrix products, instead of N x B triangular solves."""
        d = self.loc.shape[-1]
        eye = torch.eye(d, dtype=self.loc.dtype, device=self.loc.device).expand_as(self.scale_tril)
        inverse = torch.linalg.solve_triangular(self.scale_tril, eye, upper=False)  # (B, D, D)
        white = torch.einsum("bij,nj->nbi", inverse, value) - torch.einsum("bij,bj->bi", inverse, self.loc)
        return -0.5 * (d * math.log(2 * math.pi) + white.pow(2).sum(-1)) - 0.5 * self.log_det_cov()

    def entropy(self) -> torch.Tensor:
        d = self.loc.shape[-1]
        return 0.5 * d * (1.0 + math.log(2 * math.pi)) + 0.5 * self.log_det_cov()

    def marginal(self, blocks: Sequence[int], block_dim: int) -> FullCovGaussian:
        """Marginal law of the given modality blocks. Its Cholesky factor comes from a QR decomposition of
        the selected rows of L (S_bb = L_b L_b^T = R^T R), which stays accurate where forming S_bb and
        factorising it would fail (a posterior with one tiny scale and large within-block entries)."""
        idx = block_indices(blocks, block_dim, self.loc.device)
        r = torch.linalg.qr(self.scale_tril[..., idx, :].mT, mode="r")[1]
        sign = torch.sign(r.diagonal(dim1=-2, dim2=-1))
        return FullCovGaussian(self.loc[..., idx], r.mT * torch.where(sign == 0, 1.0, sign).unsqueeze(-2))

    def condition(self, observed: Sequence[int], value: torch.Tensor, block_dim: int) -> FullCovGaussian:
        """Law of the remaining blocks given the ``observed`` blocks equal ``value`` (Proposition 1).

        ``value`` holds the observed blocks' coordinates in the order given, shape (..., len(observed) * d);
        the result is over the missing blocks in increasing order:
        mu_m + S_mo S_oo^-1 (z_o - mu_o) and S_mm - S_mo S_oo^-1 S_om.
        """
        n_blocks = self.loc.shape[-1] // block_dim
        missing = [b for b in range(n_blocks) if b not in set(observed)]
        o = block_indices(observed, block_dim, self.loc.device)
        m = block_indices(missing, block_dim, self.loc.device)
        cov = self.covariance_matrix
        chol_oo = torch.linalg.cholesky(cov[..., o[:, None], o])
        cov_om = cov[..., o[:, None], m]
        gain_t = torch.cholesky_solve(cov_om, chol_oo)  # S_oo^-1 S_om, (..., |o|, |m|)
        diff = (value - self.loc[..., o]).unsqueeze(-2)
        loc = self.loc[..., m] + (diff @ gain_t).squeeze(-2)
        cond_cov = cov[..., m[:, None], m] - cov_om.mT @ gain_t
        cond_cov = 0.5 * (cond_cov + cond_cov.mT)
        return FullCovGaussian(loc, torch.linalg.cholesky(cond_cov))


@register_kl(FullCovGaussian, FullCovGaussian)
def kl_full_cov_gaussian(q: FullCovGaussian, p: FullCovGaussian) -> torch.Tensor:
    """Closed-form KL(q || p) = 0.5 [tr(Sp^-1 Sq) + |Lp^-1 (mp - mq)|^2 - D + ln|Sp| - ln|Sq|]."""
    batch = broadcast_shapes(q.batch_shape, p.batch_shape)
    Lp = p.scale_tril.expand(*batch, -1, -1)
    Lq = q.scale_tril.expand(*batch, -1, -1)
    diff = (p.loc - q.loc).expand(*batch, -1).unsqueeze(-1)
    trace = torch.linalg.solve_triangular(Lp, Lq, upper=False).pow(2).sum((-2, -1))
    maha = torch.linalg.solve_triangular(Lp, diff, upper=False).pow(2).sum((-2, -1))
    d = q.loc.shape[-1]
    return 0.5 * (trace + maha - d + p.log_det_cov() - q.log_det_cov())
