"""Asymmetric Laplace, GIG, generalized hyperbolic, Bessel and MMD helpers (ALMRF math)."""

import math

import numpy as np
import pytest
import scipy.special as sp
import torch
from scipy import stats

from mrfbench.models.latent import (
    AsymmetricLaplace,
    GeneralizedHyperbolic,
    bessel_k_ratio,
    log_bessel_k,
    sample_gig,
)


def random_al(dim=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=dtype)
    cov = a @ a.T / dim + 0.3 * torch.eye(dim, dtype=dtype)
    skew = torch.randn(dim, generator=g, dtype=dtype) * 0.6
    return AsymmetricLaplace(skew, torch.linalg.cholesky(cov)), cov


@pytest.mark.parametrize("order", [0, 0.5, 1, -1.5, 2, 3.5, -6, 12.5])
def test_log_bessel_k_matches_scipy_including_large_arguments(order):
    x = torch.tensor([1e-4, 0.05, 0.7, 3.0, 40.0, 800.0], dtype=torch.float64)
    ref = np.log(sp.kve(order, x.numpy())) - x.numpy()  # kve: exponentially scaled, finite where kv underflows
    np.testing.assert_allclose(log_bessel_k(order, x).numpy(), ref, rtol=1e-10, atol=1e-10)
    assert torch.isfinite(log_bessel_k(order, x)).all()  # K_v(800) underflows float64, its log does not
    np.testing.assert_allclose(bessel_k_ratio(order, x[:4]).numpy(),
                               sp.kv(order + 1, x[:4].numpy()) / sp.kv(order, x[:4].numpy()), rtol=1e-9)


def test_log_bessel_k_rejects_orders_off_the_half_grid():
    with pytest.raises(ValueError, match="multiples of 1/2"):
        log_bessel_k(0.3, torch.ones(1))


@pytest.mark.parametrize(("lam", "chi", "psi"), [
    (0.0, 1.0, 2.0),  # ratio of uniforms with mode shift (b > 1)
    (0.5, 3.0, 0.1),  # ratio of uniforms without mode shift
    (0.2, 0.001, 0.1),  # three-piece hat (small b)
    (-1.0, 0.01, 2.5),  # negative order through 1 / GIG(-lam, psi, chi)
    (2.5, 1.0, 1.0),
])
def test_gig_samples_match_the_known_mean_and_law(lam, chi, psi):
    torch.manual_seed(0)
    n = 100_000
    w = sample_gig(lam, torch.full((n,), chi), torch.full((n,), psi))
    b, eta = math.sqrt(chi * psi), math.sqrt(chi / psi)
    mean = eta * sp.kv(lam + 1, b) / sp.kv(lam, b)
    sd = eta * math.sqrt(sp.kv(lam + 2, b) / sp.kv(lam, b) - (sp.kv(lam + 1, b) / sp.kv(lam, b)) ** 2)
    assert abs(w.mean().item() - mean) < 5 * sd / math.sqrt(n)
    reference = stats.geninvgauss(lam, b).rvs(size=n, random_state=np.random.default_rng(0))
    assert stats.ks_2samp(w.numpy() / eta, reference).pvalue > 1e-3


def test_gig_sampler_takes_a_different_law_per_element():
    torch.manual_seed(0)
    chi = torch.tensor([0.01, 1.0, 50.0]).repeat(20_000)
    w = sample_gig(-0.5, chi, torch.full_like(chi, 2.0)).reshape(20_000, 3)
    # GIG(-1/2, chi, psi) is the inverse Gaussian with mean sqrt(chi / psi) and variance mean^3 / chi
    mean = np.sqrt(np.array([0.01, 1.0, 50.0]) / 2)
    se = np.sqrt(mean**3 / np.array([0.01, 1.0, 50.0]) / 20_000)
    assert np.all(np.abs(w.mean(0).numpy() - mean) < 4 * se)


def test_al_samples_have_mean_m_and_covariance_sigma_plus_m_m_t():
    torch.manual_seed(1)
    al, cov = random_al()
    y = al.sample((400_000,))
    torch.testing.assert_close(y.mean(0), al.skew, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(y.T), cov + torch.outer(al.skew, al.skew), atol=0.03, rtol=0)
    torch.testing.assert_close(al.covariance_matrix, cov + torch.outer(al.skew, al.skew))


def test_al_sample_with_log_prob_is_log_prob_of_the_sample_and_stays_right_when_degenerate():
    torch.manual_seed(2)
    al, cov = random_al()
    y, log_q = al.sample_with_log_prob((2000,))
    assert y.dtype == torch.float64 and y.shape == (2000, 4)
    torch.testing.assert_close(log_q, al.log_prob(y))
    torch.testing.assert_close(y.mean(0), al.skew, atol=0.06, rtol=0)
    # a float32 law of width e^-40 (met in MMD-trained posteriors): the draws' own density, not their rounding
    narrow = AsymmetricLaplace(torch.tensor([0.5, -1.0]), torch.eye(2) * math.exp(-40))
    y32, log_q = narrow.sample_with_log_prob((256,))
    wide = AsymmetricLaplace(torch.tensor([0.5, -1.0], dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    kl = (log_q - wide.log_prob(y32)).mean()
    assert 35 < kl < 50  # about 40 nats: the law is e^40 times narrower across m (along m, W spreads it)
    assert (narrow.log_prob(narrow.sample((256,))) < -1e6).any()  # what reading the rounded draws gave


def test_al_rsample_is_differentiable_in_skew_and_scale():
    skew = torch.tensor([0.3, -0.2], requires_grad=True)
    tril = torch.eye(2).requires_grad_()
    AsymmetricLaplace(skew, tril).rsample((16,)).pow(2).sum().backward()
    assert torch.isfinite(skew.grad).all() and skew.grad.abs().sum() > 0 and tril.grad.abs().sum() > 0


def test_al_density_is_the_laplace_density_in_one_dimension():
    al = AsymmetricLaplace(torch.zeros(1, dtype=torch.float64), torch.full((1, 1), 0.8, dtype=torch.float64))
    y = torch.linspace(-3, 3, 13, dtype=torch.float64)[:, None] + 0.01
    expected = torch.distributions.Laplace(0.0, 0.8 / math.sqrt(2)).log_prob(y[:, 0])
    torch.testing.assert_close(al.log_prob(y), expected)


def test_al_density_integrates_to_one_in_1d_and_2d():
    al1 = AsymmetricLaplace(torch.tensor([0.7], dtype=torch.float64), torch.tensor([[0.9]], dtype=torch.float64))
    x = torch.linspace(-30, 60, 400_000, dtype=torch.float64)[:, None]
    assert abs(torch.trapezoid(al1.log_prob(x).exp(), x[:, 0]).item() - 1) < 1e-4
    cov = torch.tensor([[1.0, 0.5], [0.5, 0.8]], dtype=torch.float64)
    al2 = AsymmetricLaplace(torch.tensor([0.4, -0.6], dtype=torch.float64), torch.linalg.cholesky(cov))
    # midpoint rule on a grid that avoids the integrable log-singularity at the origin
    h = 0.025
    g = torch.arange(-25, 25, h, dtype=torch.float64) + h / 2
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)
    assert abs(al2.log_prob(pts).exp().sum().item() * h * h - 1) < 5e-3


def test_al_density_matches_a_histogram_of_its_samples():
    torch.manual_seed(2)
    al = AsymmetricLaplace(torch.tensor([0.5, -0.3], dtype=torch.float64),
                           torch.linalg.cholesky(torch.tensor([[0.6, 0.2], [0.2, 0.5]], dtype=torch.float64)))
    y = al.sample((400_000,))
    edges = torch.linspace(-2, 2, 9, dtype=torch.float64)
    hist, _, _ = np.histogram2d(y[:, 0].numpy(), y[:, 1].numpy(), bins=[edges.numpy()] * 2)
    centres = (edges[1:] + edges[:-1]) / 2
    # density at bin centres times bin area, integrated more finely within each bin
    fine = torch.linspace(0, 0.5, 11, dtype=torch.float64)[:-1] + 0.025
    sub = (edges[:-1, None] + fine).reshape(-1)
    dens = al.log_prob(torch.stack(torch.meshgrid(sub, sub, indexing="ij"), -1)).exp() * 0.05**2
    expected = dens.reshape(8, 10, 8, 10).sum((1, 3)).numpy() * len(y)
    mask = expected > 2000
    assert mask.sum() > 20
    np.testing.assert_allclose(hist[mask], expected[mask], rtol=0.05)
    assert centres.shape == (8,)


def test_al_marginal_keeps_the_sub_vector_and_sub_block():
    al, cov = random_al()
    marg = al.marginal([1], 2)
    torch.testing.assert_close(marg.skew, al.skew[2:])
    torch.testing.assert_close(marg.scale_tril @ marg.scale_tril.mT, cov[2:, 2:])


def test_gh_conditional_with_the_al_marginal_rebuilds_the_joint():
    """z_o from the AL marginal, then z_m from the exact GH conditional: (z_m, z_o) must be the AL law."""
    torch.manual_seed(3)
    al, cov = random_al()
    z_o = al.marginal([1], 2).sample((300_000,))
    z_m = al.condition([1], z_o, 2).sample()
    joint = torch.cat([z_m, z_o], -1)
    torch.testing.assert_close(joint.mean(0), al.skew, atol=0.015, rtol=0)
    torch.testing.assert_close(torch.cov(joint.T), cov + torch.outer(al.skew, al.skew), atol=0.04, rtol=0)


def test_moment_matched_conditional_matches_monte_carlo_moments_of_the_exact_one():
    torch.manual_seed(4)
    al, _ = random_al(dim=6)
    for observed in ([1], [0, 2]):
        z_o = torch.tensor([0.4, -1.1] * len(observed), dtype=torch.float64).expand(200_000, -1)
        gh = al.condition(observed, z_o, 2)
        draws = gh.sample()
        matched = gh.moment_matched()
        torch.testing.assert_close(draws.mean(0), matched.loc[0], atol=0.02, rtol=0)
        torch.testing.assert_close(torch.cov(draws.T), matched.covariance_matrix[0], atol=0.03, rtol=0.02)


def test_gh_mixing_moments_are_the_gig_moments():
    gh = GeneralizedHyperbolic(-0.5, torch.tensor([2.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64),
                               torch.zeros(1, 2), torch.zeros(1, 2), torch.eye(2).expand(1, 2, 2))
    mean, var = gh.mixing_moments()
    b, eta = math.sqrt(6), math.sqrt(2 / 3)
    m1 = eta * sp.kv(0.5, b) / sp.kv(-0.5, b)
    m2 = eta**2 * sp.kv(1.5, b) / sp.kv(-0.5, b)
    assert math.isclose(mean.item(), m1, rel_tol=1e-6) and math.isclose(var.item(), m2 - m1**2, rel_tol=1e-5)
