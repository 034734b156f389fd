"""Distributions shared by the models: full-covariance Gaussian with a (masked) Cholesky parameterisation.

Everything is batched over leading dimensions. The latent vector of an M-modality model with d dimensions
per modality is the concatenation (z_1, ..., z_M) of D = M * d coordinates; "blocks" are modality indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.distributions import Distribution, constraints, register_kl


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
        return per_block.flatten(-2)[..., self.within_keep.to(per_block.device)]

    def scale_tril(self, log_diag: torch.Tensor, within: torch.Tensor, cross: torch.Tensor | None) -> torch.Tensor:
        """Assemble L (..., D, D) from its log-diagonal (..., D), kept within-block (..., n_within) and
        kept cross-block (..., n_cross) entries; ``cross=None`` gives a block-diagonal L."""
        L = torch.diag_embed(log_diag.exp())
        rows, cols, values = self.within_rows, self.within_cols, within
        if cross is not None:
            rows, cols = torch.cat([rows, self.cross_rows]), torch.cat([cols, self.cross_cols])
            values = torch.cat([within, cross], dim=-1)
        if rows.numel():
            L[..., rows.to(L.device), cols.to(L.device)] = values.expand(*L.shape[:-2], -1)
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
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale_tril.shape[:-2])
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
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
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
    batch = torch.broadcast_shapes(q.batch_shape, p.batch_shape)
    Lp = p.scale_tril.expand(*batch, -1, -1)
    Lq = q.scale_tril.expand(*batch, -1, -1)
    diff = (p.loc - q.loc).expand(*batch, -1).unsqueeze(-1)
    trace = torch.linalg.solve_triangular(Lp, Lq, upper=False).pow(2).sum((-2, -1))
    maha = torch.linalg.solve_triangular(Lp, diff, upper=False).pow(2).sum((-2, -1))
    d = q.loc.shape[-1]
    return 0.5 * (trace + maha - d + p.log_det_cov() - q.log_det_cov())


# --- factorised experts (the baselines' unimodal posteriors), products and mixtures of them ---------------

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


def dreg_surrogate(log_w: torch.Tensor, samples: list[torch.Tensor], sample_dim: int) -> torch.Tensor:
    """Doubly reparameterised IWAE surrogate (Tucker et al. 2019) for log-weights over ``sample_dim``.

    ``log_w`` must be computed with the posterior parameters detached inside log q; the gradient reaching
    the encoder through the reparameterised ``samples`` (leading dims matching ``log_w``'s, or fewer
    trailing ones broadcast by it) is rescaled by the normalised weights via hooks, so the encoder gets
    squared weights, the decoder and prior the weighted IWAE gradient. The returned value is the IWAE bound
    log mean_k w_k itself (so a validation loss, and the checkpoint chosen by it, mean something); only its
    gradient is DReG's."""
    with torch.no_grad():
        weights = torch.softmax(log_w, dim=sample_dim)
    for sample in samples:
        if sample.requires_grad:
            scale = weights.reshape(*weights.shape, *([1] * (sample.dim() - weights.dim())))
            sample.register_hook(lambda grad, scale=scale: scale * grad)
    surrogate = (weights * log_w).sum(sample_dim)
    return log_mean_exp(log_w.detach(), sample_dim) + surrogate - surrogate.detach()


# --- asymmetric Laplace, generalized inverse Gaussian and generalized hyperbolic (ALMRF, paper Sec. 3.1.2) --


def log_bessel_k(order: float, x: torch.Tensor) -> torch.Tensor:
    """ln K_v(x), the modified Bessel function of the second (third) kind, for x > 0 and an order v that is
    a multiple of 1/2 (all the AL and GH formulas need). Stable for large x (exponentially scaled start
    values) and large |v| (upward recurrence on the ratios r_v = K_{v+1} / K_v = 1 / r_{v-1} + 2 v / x)."""
    v = abs(float(order))  # K_{-v} = K_v
    if 2 * v != round(2 * v):
        raise ValueError(f"log_bessel_k supports orders that are multiples of 1/2, got {order}")
    x = x.to(torch.float64) if x.dtype != torch.float64 else x
    if v == round(v):
        start, log_k = 0.0, torch.log(torch.special.scaled_modified_bessel_k0(x)) - x
        ratio = torch.special.scaled_modified_bessel_k1(x) / torch.special.scaled_modified_bessel_k0(x)
    else:
        start, log_k = 0.5, 0.5 * math.log(math.pi / 2) - 0.5 * torch.log(x) - x
        ratio = 1.0 + 1.0 / x
    order_now = start
    while order_now < v:
        log_k = log_k + torch.log(ratio)
        order_now += 1.0
        ratio = 1.0 / ratio + 2.0 * order_now / x
    return log_k


def bessel_k_ratio(order: float, x: torch.Tensor) -> torch.Tensor:
    """R_v(x) = K_{v+1}(x) / K_v(x) (paper Eq. 36), from the log-scaled Bessel functions."""
    return torch.exp(log_bessel_k(order + 1, x) - log_bessel_k(order, x))


def sample_gig(lam: float, chi: torch.Tensor, psi: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples of GIG(lam, chi, psi), density proportional to w^(lam-1) exp(-(chi / w + psi w) / 2), one per
    element of the broadcast chi, psi (> 0), vectorised over elements with different parameters.

    Hormann & Leydold (2014): with b = sqrt(chi psi) and p = |lam|, w = sqrt(chi / psi) * y where y has the
    quasi-density y^(p-1) exp(-b (y + 1/y) / 2) (inverted when lam < 0); y comes from the ratio-of-uniforms
    method with mode shift (p >= 1 or b > 1), without it (b >= min(1/2, 2 sqrt(1-p) / 3)), or their
    three-piece rejection hat otherwise. Each regime has a bounded rejection constant; the loop redraws only
    the rejected elements. Computed in float64."""
    chi, psi = torch.broadcast_tensors(chi.to(torch.float64), psi.to(torch.float64))
    p, b = abs(float(lam)), torch.sqrt(chi * psi)
    y = _sample_standard_gig(p, b.reshape(-1), generator).reshape(b.shape)
    if lam < 0:
        y = 1.0 / y
    return torch.sqrt(chi / psi) * y


def _sample_standard_gig(p: float, b: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    def log_quasi(y, b):
        return torch.where(y > 0, (p - 1) * torch.log(y.clamp_min(1e-300)) - 0.5 * b * (y + 1 / y.clamp_min(1e-300)),
                           torch.full_like(y, -math.inf))

    mode = b / (torch.sqrt(torch.as_tensor((p - 1) ** 2, dtype=b.dtype) + b**2) + 1 - p) if p < 1 else \
        (torch.sqrt((1 - p) ** 2 + b**2) - (1 - p)) / b
    shift = (p >= 1) | (b > 1)
    no_shift = ~shift & (b >= min(0.5, 2 * math.sqrt(max(1 - p, 0.0)) / 3))
    hat = ~shift & ~no_shift
    # ratio of uniforms with mode shift: bounding box from the roots of a cubic (Cardano)
    a2 = -2 * (p + 1) / b - mode
    a1 = 2 * mode * (p - 1) / b - 1
    p1 = a1 - a2**2 / 3
    q1 = 2 * a2**3 / 27 - a2 * a1 / 3 + mode
    phi = torch.arccos((-q1 * torch.sqrt(-27 / p1**3) / 2).clamp(-1, 1))
    s1 = -torch.sqrt(-4 * p1 / 3)
    root1, root2 = s1 * torch.cos(phi / 3 + math.pi / 3) - a2 / 3, -s1 * torch.cos(phi / 3) - a2 / 3
    log_mode = log_quasi(mode, b)
    vmin_s = (root1 - mode) * torch.exp(0.5 * (log_quasi(root1, b) - log_mode))
    vmax_s = (root2 - mode) * torch.exp(0.5 * (log_quasi(root2, b) - log_mode))
    # ratio of uniforms without mode shift
    xplus = ((1 + p) + torch.sqrt((1 + p) ** 2 + b**2)) / b
    vmax_n = xplus * torch.exp(0.5 * (log_quasi(xplus, b) - log_mode))
    # three-piece hat (p < 1, small b)
    x0 = b / (1 - p) if p < 1 else b
    xs = torch.maximum(x0, 2 / b)
    k1 = torch.exp(log_quasi(mode, b) - log_mode)  # = 1, the hat is scaled by the density at the mode
    A1 = k1 * x0
    k2 = torch.exp(-b - log_mode)
    A2 = torch.where(x0 < 2 / b, k2 * (((2 / b) ** p - x0**p) / p if p > 0 else torch.log(2 / b**2)), torch.zeros_like(b))
    k3 = torch.exp((p - 1) * torch.log(xs) - log_mode)
    A3 = 2 * k3 * torch.exp(-xs * b / 2) / b
    A = A1 + A2 + A3

    out = torch.empty_like(b)
    pending = torch.arange(len(b), device=b.device)
    for _ in range(10_000):
        if len(pending) == 0:
            return out
        bb, k = b[pending], len(pending)
        u = torch.rand(k, dtype=b.dtype, device=b.device, generator=generator)
        v = torch.rand(k, dtype=b.dtype, device=b.device, generator=generator)
        # ratio of uniforms (u scaled so umax = 1 after dividing by the density at the mode)
        vmin = torch.where(shift[pending], vmin_s[pending], torch.zeros_like(bb))
        vmax = torch.where(shift[pending], vmax_s[pending], vmax_n[pending])
        centre = torch.where(shift[pending], mode[pending], torch.zeros_like(bb))
        y_rou = (vmin + (vmax - vmin) * v) / u + centre
        ok_rou = 2 * torch.log(u) <= log_quasi(y_rou, bb) - log_mode[pending]
        # three-piece hat
        vA = v * A[pending]
        a1, a2, x0p, xsp, k2p, k3p = A1[pending], A2[pending], x0[pending], xs[pending], k2[pending], k3[pending]
        piece1, piece2 = vA <= a1, (vA > a1) & (vA <= a1 + a2)
        y1 = x0p * vA / a1
        y2 = (x0p**p + (vA - a1) * p / k2p) ** (1 / p) if p > 0 else bb * torch.exp((vA - a1) * torch.exp(bb))
        z3 = (torch.exp(-xsp * bb / 2) - bb * (vA - a1 - a2) / (2 * k3p)).clamp_min(1e-300)
        y3 = -2 / bb * torch.log(z3)
        y_hat = torch.where(piece1, y1, torch.where(piece2, y2, y3))
        h = torch.where(piece1, torch.ones_like(bb), torch.where(piece2, k2p * y_hat ** (p - 1), k3p * torch.exp(-y_hat * bb / 2)))
        ok_hat = torch.log(u * h) <= log_quasi(y_hat, bb) - log_mode[pending]
        use_hat = hat[pending]
        y = torch.where(use_hat, y_hat, y_rou)
        accepted = torch.where(use_hat, ok_hat, ok_rou) & torch.isfinite(y) & (y > 0)
        out[pending[accepted]] = y[accepted]
        pending = pending[~accepted]
    raise RuntimeError(f"GIG sampling did not converge for {len(pending)} elements (p={p})")


class AsymmetricLaplace(Distribution):
    """Asymmetric multivariate Laplace AL_d(m, Sigma), Sigma = L L^T (Kotz et al. 2001; paper Eq. 10-11):
    Y = m W + sqrt(W) X with W ~ Exp(1) and X ~ N(0, Sigma); mean m, covariance Sigma + m m^T. ``rsample``
    is reparameterised in m and L; ``log_prob`` is the Bessel-function density of Appendix B.1."""

    arg_constraints = {"skew": constraints.real_vector, "scale_tril": constraints.lower_cholesky}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, skew: torch.Tensor, scale_tril: torch.Tensor, validate_args: bool | None = False):
        batch_shape = torch.broadcast_shapes(skew.shape[:-1], scale_tril.shape[:-2])
        self.skew = skew.expand(*batch_shape, -1)
        self.scale_tril = scale_tril.expand(*batch_shape, -1, -1)
        super().__init__(batch_shape, skew.shape[-1:], validate_args=validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return self.skew

    @property
    def covariance_matrix(self) -> torch.Tensor:
        return self.scale_tril @ self.scale_tril.mT + self.skew.unsqueeze(-1) * self.skew.unsqueeze(-2)

    def _gaussian(self) -> FullCovGaussian:
        return FullCovGaussian(torch.zeros_like(self.skew), self.scale_tril)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        w = torch.empty(shape[:-1], dtype=self.skew.dtype, device=self.skew.device).exponential_().unsqueeze(-1)
        return self.skew * w + w.sqrt() * self._gaussian().rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """ln g(y) = ln 2 + y' S^-1 m - (d/2) ln 2 pi - ln|S|/2 + (v/2) ln(q / c) + ln K_v(sqrt(c q)),
        q = y' S^-1 y, c = 2 + m' S^-1 m, v = (2 - d) / 2 (Appendix B.1); float64 inside."""
        d = self.skew.shape[-1]
        L = self.scale_tril.expand(*value.shape[:-1], -1, -1).to(torch.float64)
        white_y = torch.linalg.solve_triangular(L, value.to(torch.float64).unsqueeze(-1), upper=False).squeeze(-1)
        white_m = torch.linalg.solve_triangular(L, self.skew.expand_as(value).to(torch.float64).unsqueeze(-1),
                                                upper=False).squeeze(-1)
        q = white_y.pow(2).sum(-1).clamp_min(1e-300)
        c = 2.0 + white_m.pow(2).sum(-1)
        v = (2 - d) / 2
        log_det = 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        out = (math.log(2.0) + (white_y * white_m).sum(-1) - 0.5 * d * math.log(2 * math.pi) - 0.5 * log_det
               + 0.5 * v * (q.log() - c.log()) + log_bessel_k(v, torch.sqrt(c * q)))
        return out.to(value.dtype)

    def marginal(self, blocks: Sequence[int], block_dim: int) -> AsymmetricLaplace:
        """Marginal law of the given blocks: AL with the sub-vector of m and sub-block of Sigma
        (Kotz et al. 2001, Prop. 6.8.1; paper Appendix A.3)."""
        idx = block_indices(blocks, block_dim, self.skew.device)
        return AsymmetricLaplace(self.skew[..., idx], self._gaussian().marginal(blocks, block_dim).scale_tril)

    def condition(self, observed: Sequence[int], value: torch.Tensor, block_dim: int) -> GeneralizedHyperbolic:
        """Law of the remaining blocks given the ``observed`` blocks equal ``value``: the generalized
        hyperbolic law of Corollary 1 (paper Appendix A.3, Kotz et al. 2001 Thm. 6.7.1). Given W = w the pair
        is Gaussian, so the missing blocks are mu + m~ W + sqrt(W) X, X ~ N(0, Delta), with
        mu = S_mo S_oo^-1 z_o, m~ = m_m - S_mo S_oo^-1 m_o, Delta = S_mm - S_mo S_oo^-1 S_om, and W | z_o ~
        GIG(1 - d_o / 2, z_o' S_oo^-1 z_o, 2 + m_o' S_oo^-1 m_o), d_o the observed dimension (the paper's
        lambda = 1 - d_i / 2 names the observed block d_i)."""
        gaussian = self._gaussian()
        given_value = gaussian.condition(observed, value, block_dim)
        idx = block_indices(observed, block_dim, self.skew.device)
        given_skew = gaussian.condition(observed, self.skew[..., idx], block_dim)
        missing_idx = block_indices([b for b in range(self.skew.shape[-1] // block_dim) if b not in set(observed)],
                                    block_dim, self.skew.device)
        chol_oo = gaussian.marginal(observed, block_dim).scale_tril
        chi = _mahalanobis(chol_oo, value)
        psi = 2.0 + _mahalanobis(chol_oo, self.skew[..., idx])
        return GeneralizedHyperbolic(
            lam=1.0 - len(idx) / 2, chi=chi, psi=psi, loc=given_value.loc,
            skew=self.skew[..., missing_idx] - given_skew.loc, scale_tril=given_value.scale_tril)


def _mahalanobis(scale_tril: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    L = scale_tril.expand(*value.shape[:-1], -1, -1)
    return torch.linalg.solve_triangular(L, value.unsqueeze(-1), upper=False).squeeze(-1).pow(2).sum(-1)


class GeneralizedHyperbolic:
    """Generalized hyperbolic law as a normal mean-variance mixture (paper Eq. 14, Appendix B.2):
    Y = loc + skew W + sqrt(W) X with W ~ GIG(lam, chi, psi) and X ~ N(0, L L^T)."""

    def __init__(self, lam: float, chi: torch.Tensor, psi: torch.Tensor, loc: torch.Tensor, skew: torch.Tensor,
                 scale_tril: torch.Tensor):
        self.lam, self.loc, self.skew, self.scale_tril = lam, loc, skew, scale_tril
        self.chi, self.psi = chi.clamp_min(1e-12), psi

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw per batch element (exact: W from the GIG sampler)."""
        w = sample_gig(self.lam, self.chi, self.psi, generator).to(self.loc.dtype).unsqueeze(-1)
        x = FullCovGaussian(torch.zeros_like(self.loc), self.scale_tril).sample()
        return self.loc + self.skew * w + w.sqrt() * x

    def mixing_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """E[W] = sqrt(chi / psi) R_lam(s) and Var[W] = (chi / psi) (R_lam R_{lam+1} - R_lam^2)(s),
        s = sqrt(chi psi), with the Bessel ratios R of Eq. 36."""
        s = torch.sqrt(self.chi * self.psi).to(torch.float64)
        r0, r1 = bessel_k_ratio(self.lam, s), bessel_k_ratio(self.lam + 1, s)
        eta = torch.sqrt(self.chi / self.psi).to(torch.float64)
        return (eta * r0).to(self.loc.dtype), (eta**2 * (r0 * r1 - r0**2)).clamp_min(0).to(self.loc.dtype)

    def moment_matched(self) -> FullCovGaussian:
        """The Gaussian with this law's mean loc + skew E[W] and covariance E[W] Delta + Var[W] skew skew^T
        (paper Eq. 36, Appendix D.2; Eq. 36 prints Var[W] with Q / (2C) where the GIG variance has
        (Q / C)^2, which is what we use and what the Monte Carlo test checks)."""
        mean_w, var_w = self.mixing_moments()
        delta = self.scale_tril @ self.scale_tril.mT
        cov = mean_w[..., None, None] * delta + var_w[..., None, None] * self.skew.unsqueeze(-1) * self.skew.unsqueeze(-2)
        return FullCovGaussian(self.loc + self.skew * mean_w.unsqueeze(-1), torch.linalg.cholesky(cov))


# --- kernel two-sample discrepancy (ALMRF objective, paper Eq. 12 and Appendix B.3) ------------------------

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
