"""Asymmetric Laplace (ALMRF prior and posterior) and the generalized hyperbolic laws of its conditionals,
with the modified Bessel functions and the GIG sampler they need."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.distributions import Distribution, constraints

import mrfbench.models.latent.noise as noise
from mrfbench.models.latent.gaussian import FullCovGaussian, block_indices, broadcast_shapes


def log_bessel_k(order: float, x: torch.Tensor, scaled: bool = False) -> torch.Tensor:
    """ln K_v(x), the modified Bessel function of the second (third) kind, for x > 0 and an order v that is
    a multiple of 1/2 (all the AL and GH formulas need). Stable for large x (exponentially scaled start
    values) and large |v| (upward recurrence on the ratios r_v = K_{v+1} / K_v = 1 / r_{v-1} + 2 v / x).
    ``scaled``: ln(K_v(x) e^x), which stays exact where x is too large to add back."""
    v = abs(float(order))  # K_{-v} = K_v
    if 2 * v != round(2 * v):
        raise ValueError(f"log_bessel_k supports orders that are multiples of 1/2, got {order}")
    x = x.to(torch.float64) if x.dtype != torch.float64 else x
    if v == round(v):
        start, log_k = 0.0, torch.log(torch.special.scaled_modified_bessel_k0(x))
        ratio = torch.special.scaled_modified_bessel_k1(x) / torch.special.scaled_modified_bessel_k0(x)
    else:
        start, log_k = 0.5, 0.5 * math.log(math.pi / 2) - 0.5 * torch.log(x)
        ratio = 1.0 + 1.0 / x
    order_now = start
    while order_now < v:
        log_k = log_k + torch.log(ratio)
        order_now += 1.0
        ratio = 1.0 / ratio + 2.0 * order_now / x
    return log_k if scaled else log_k - x


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
        batch_shape = broadcast_shapes(skew.shape[:-1], scale_tril.shape[:-2])
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
        w = noise.exponential(shape[:-1], self.skew.dtype, self.skew.device).unsqueeze(-1)
        return self.skew * w + w.sqrt() * self._gaussian().rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """ln g(y) = ln 2 + y' S^-1 m - (d/2) ln 2 pi - ln|S|/2 + (v/2) ln(q / c) + ln K_v(sqrt(c q)),
        q = y' S^-1 y, c = 2 + m' S^-1 m, v = (2 - d) / 2 (Appendix B.1); float64 inside."""
        L = self.scale_tril.expand(*value.shape[:-1], -1, -1).to(torch.float64)
        white_y, white_m = (torch.linalg.solve_triangular(L, v.to(torch.float64).unsqueeze(-1), upper=False).squeeze(-1)
                            for v in (value, self.skew.expand_as(value)))
        return self._log_density(white_y, white_m, L).to(value.dtype)

    def sample_with_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their log-density, in float64, the density taken from the draw's whitened form
        L^-1 y = W L^-1 m + sqrt(W) eps rather than from y: a near-degenerate law (scales of e^-40 occur in
        MMD-trained posteriors) puts y's rounding error far outside its own width, and ``log_prob(y)`` then
        reads a point it gives no mass to."""
        shape = self._extended_shape(sample_shape)
        L = self.scale_tril.to(torch.float64).expand(*shape, -1)
        w = torch.empty(shape[:-1], dtype=torch.float64, device=L.device).exponential_().unsqueeze(-1)
        eps = torch.randn(shape, dtype=torch.float64, device=L.device)
        skew = self.skew.to(torch.float64)
        white_m = torch.linalg.solve_triangular(L, skew.expand(shape).unsqueeze(-1), upper=False).squeeze(-1)
        sample = skew * w + w.sqrt() * (L @ eps.unsqueeze(-1)).squeeze(-1)
        unit_m = white_m / white_m.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        eps_across = eps - (eps * unit_m).sum(-1, keepdim=True) * unit_m  # eps off the direction of m
        across_sq = w.squeeze(-1) * eps_across.pow(2).sum(-1)
        return sample, self._log_density(w * white_m + w.sqrt() * eps, white_m, L, across_sq)

    def _log_density(self, white_y: torch.Tensor, white_m: torch.Tensor, L: torch.Tensor,
                     across_sq: torch.Tensor | None = None) -> torch.Tensor:
        """ln g from the whitened value a = L^-1 y and skew b = L^-1 m (float64, L broadcast to them). Its
        exponent a'b - sqrt(c q) is a difference of two large numbers when the law is narrow; given the
        squared part of a across b (``across_sq``, exact for a draw), it is taken as the equal
        -(2 q + |b|^2 |a across b|^2) / (sqrt(c q) + a'b) instead (Lagrange's identity)."""
        d = self.skew.shape[-1]
        q = white_y.pow(2).sum(-1).clamp_min(1e-300)
        m_sq = white_m.pow(2).sum(-1)
        c, along = 2.0 + m_sq, (white_y * white_m).sum(-1)
        root = torch.sqrt(c) * torch.sqrt(q)  # not sqrt(c q): c and q both reach e^550 for scales of e^-140
        exponent = along - root if across_sq is None else -(2.0 * q + m_sq * across_sq) / (root + along)
        v = (2 - d) / 2
        log_det = 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return (math.log(2.0) - 0.5 * d * math.log(2 * math.pi) - 0.5 * log_det + 0.5 * v * (q.log() - c.log())
                + log_bessel_k(v, root, scaled=True) + exponent)

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

    @property
    def mean(self) -> torch.Tensor:
        """loc + skew E[W]: the mean it shares with its moment-matched Gaussian."""
        return self.loc + self.skew * self.mixing_moments()[0].unsqueeze(-1)

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
