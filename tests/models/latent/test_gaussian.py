import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from mrfbench.models.latent import CholeskyLayout, FullCovGaussian, block_indices


def random_gaussian(batch=(), dim=6, dtype=torch.float64):
    layout = CholeskyLayout(n_blocks=dim // 2, block_dim=2)
    log_diag = 0.3 * torch.randn(*batch, dim, dtype=dtype)
    within = torch.randn(*batch, layout.n_within, dtype=dtype)
    cross = 0.5 * torch.randn(*batch, layout.n_cross, dtype=dtype)
    return FullCovGaussian(torch.randn(*batch, dim, dtype=dtype), layout.scale_tril(log_diag, within, cross))


def test_parameter_counts_match_the_paper():
    assert CholeskyLayout(4, 2).n_free == 44
    assert CholeskyLayout(5, 16, sparsity=0.84).n_free == 665


def test_mask_zeroes_the_requested_fraction_of_off_diagonal_entries():
    layout = CholeskyLayout(5, 16, sparsity=0.84, seed=3)
    L = layout.scale_tril(torch.zeros(80), torch.ones(layout.n_within), torch.ones(layout.n_cross))
    strictly_lower = torch.tril(L, -1)
    assert int((strictly_lower != 0).sum()) == 505 == layout.n_within + layout.n_cross
    # within-block entries come from the modality encoders and stay inside the diagonal blocks
    assert torch.all(layout.within_rows // 16 == layout.within_cols // 16)
    assert torch.all(layout.cross_rows // 16 != layout.cross_cols // 16)


def test_mask_is_fixed_by_its_seed():
    a, b = CholeskyLayout(3, 4, 0.5, seed=1), CholeskyLayout(3, 4, 0.5, seed=1)
    assert torch.equal(a.cross_rows, b.cross_rows) and torch.equal(a.within_keep, b.within_keep)
    assert not torch.equal(CholeskyLayout(3, 4, 0.5, seed=2).within_keep, a.within_keep) or not torch.equal(
        CholeskyLayout(3, 4, 0.5, seed=2).cross_rows, a.cross_rows)


def test_select_within_keeps_per_block_entries_in_block_order():
    layout = CholeskyLayout(3, 3, sparsity=0.0)
    per_block = torch.arange(9.0).reshape(3, 3)  # 3 blocks x 3 within entries
    L = layout.scale_tril(torch.zeros(9), layout.select_within(per_block), None)
    assert L[1, 0] == 0 and L[2, 0] == 1 and L[2, 1] == 2  # block 0
    assert L[4, 3] == 3 and L[7, 6] == 6  # blocks 1 and 2
    assert torch.count_nonzero(L[3:, :3]) == 0  # no cross entries without a cross argument


def test_log_prob_entropy_and_kl_match_torch_multivariate_normal():
    q, p = random_gaussian((5,)), random_gaussian((5,))
    mq = MultivariateNormal(q.loc, scale_tril=q.scale_tril)
    mp = MultivariateNormal(p.loc, scale_tril=p.scale_tril)
    x = torch.randn(7, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(q.log_prob(x), mq.log_prob(x))
    torch.testing.assert_close(q.entropy(), mq.entropy())
    torch.testing.assert_close(kl_divergence(q, p), kl_divergence(mq, mp))


def test_log_prob_each_scores_every_point_under_every_member():
    q = random_gaussian((5,))
    x = torch.randn(7, 6, dtype=torch.float64)
    expected = MultivariateNormal(q.loc, scale_tril=q.scale_tril).log_prob(x.unsqueeze(1))  # (7, 5)
    torch.testing.assert_close(q.log_prob_each(x), expected)


def test_kl_broadcasts_a_batched_posterior_against_an_unbatched_prior():
    q, p = random_gaussian((4,)), random_gaussian(())
    expected = kl_divergence(MultivariateNormal(q.loc, scale_tril=q.scale_tril),
                             MultivariateNormal(p.loc, scale_tril=p.scale_tril))
    torch.testing.assert_close(kl_divergence(q, p), expected)


def test_rsample_moments_and_gradients():
    g = random_gaussian(())
    loc = g.loc.clone().requires_grad_(True)
    samples = FullCovGaussian(loc, g.scale_tril).rsample((200_000,))
    torch.testing.assert_close(samples.mean(0), g.loc, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), g.covariance_matrix, atol=0.05, rtol=0.02)
    samples.sum().backward()
    torch.testing.assert_close(loc.grad, torch.full_like(loc, 200_000.0))


def closed_form_condition(cov, mean, o, m, value):
    s_oo, s_mo, s_mm = cov[o][:, o], cov[m][:, o], cov[m][:, m]
    gain = s_mo @ torch.linalg.inv(s_oo)
    return mean[m] + gain @ (value - mean[o]), s_mm - gain @ s_mo.T


@pytest.mark.parametrize("observed", [[0], [2], [0, 2], [1, 2]])
def test_conditioning_matches_the_closed_form(observed):
    g = random_gaussian((3,))
    value = torch.randn(3, 2 * len(observed), dtype=torch.float64)
    cond = g.condition(observed, value, block_dim=2)
    o = block_indices(observed, 2)
    m = block_indices([b for b in range(3) if b not in observed], 2)
    for i in range(3):
        mean, cov = closed_form_condition(g.covariance_matrix[i], g.loc[i], o, m, value[i])
        torch.testing.assert_close(cond.loc[i], mean)
        torch.testing.assert_close(cond.covariance_matrix[i], cov)


def test_conditioning_matches_monte_carlo_regression():
    """Regressing the missing blocks on the observed ones over joint samples recovers Proposition 1."""
    g = random_gaussian(())
    z = g.sample((400_000,))
    o, m = block_indices([1], 2), block_indices([0, 2], 2)
    design = torch.cat([z[:, o], torch.ones(len(z), 1, dtype=z.dtype)], 1)
    coef = torch.linalg.lstsq(design, z[:, m]).solution
    residual = z[:, m] - design @ coef
    value = torch.tensor([0.7, -1.2], dtype=torch.float64)
    cond = g.condition([1], value, block_dim=2)
    torch.testing.assert_close(cond.loc, torch.cat([value, torch.ones(1, dtype=z.dtype)]) @ coef, atol=0.02, rtol=0)
    torch.testing.assert_close(cond.covariance_matrix, torch.cov(residual.T), atol=0.03, rtol=0.03)


def test_conditioning_broadcasts_over_sample_batches_of_one_prior():
    g = random_gaussian(())
    value = torch.randn(4, 5, 2, dtype=torch.float64)
    cond = g.condition([0], value, block_dim=2)
    assert cond.batch_shape == (4, 5) and cond.sample().shape == (4, 5, 4)


def test_marginal_is_the_sub_covariance():
    g = random_gaussian(())
    marg = g.marginal([2, 0], block_dim=2)
    idx = block_indices([2, 0], 2)
    torch.testing.assert_close(marg.covariance_matrix, g.covariance_matrix[idx][:, idx])
    torch.testing.assert_close(marg.loc, g.loc[idx])


def test_sparsity_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="sparsity"):
        CholeskyLayout(2, 2, sparsity=1.0)


def test_marginal_factor_survives_an_ill_conditioned_block():
    """A posterior block with scale e^-12 beside an entry of 3: forming L L^T and factorising fails in
    float32, the QR route must not."""
    L = torch.diag_embed(torch.tensor([[1.0, 1.0, torch.tensor(-12.0).exp(), 1.0]]))
    L[0, 3, 2] = 3.0
    L[0, 2, 2], L[0, 3, 3] = 1.0, torch.tensor(-12.0).exp()
    marginal = FullCovGaussian(torch.zeros(1, 4), L).marginal([1], 2)
    assert torch.isfinite(marginal.scale_tril).all() and torch.all(marginal.scale_tril.diagonal(dim1=-2, dim2=-1) > 0)
    torch.testing.assert_close(marginal.covariance_matrix, (L @ L.mT)[:, 2:, 2:])
