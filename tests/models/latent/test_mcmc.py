import torch

from mrfbench.models.latent import FullCovGaussian, MHSettings, metropolis_within_gibbs


def gaussian_target():
    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    return FullCovGaussian(torch.tensor([1.0, -1.0, 0.5, 2.0, 0.0, -0.3]),
                           torch.linalg.cholesky(a @ a.T / 6 + 0.5 * torch.eye(6)))


def test_recovers_a_gaussian_with_quadratic_potentials():
    torch.manual_seed(0)
    target = gaussian_target()
    result = metropolis_within_gibbs(lambda z, b: -target.log_prob(z), torch.zeros(2000, 6), [0, 1, 2], 2, 20,
                                     MHSettings(burn_in=150, thin=3))
    z = result.samples.reshape(-1, 6)
    assert result.samples.shape == (2000, 20, 6)
    torch.testing.assert_close(z.mean(0), target.loc, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), target.covariance_matrix, atol=0.06, rtol=0)
    assert abs(result.acceptance - 0.35) < 0.08  # the burn-in adapted the steps to the target rate


def test_blocks_not_listed_stay_fixed_and_the_rest_follow_the_gaussian_conditional():
    torch.manual_seed(1)
    target = gaussian_target()
    init = torch.zeros(3000, 6)
    init[:, 2:4] = torch.tensor([1.0, 1.5])
    result = metropolis_within_gibbs(lambda z, b: -target.log_prob(z), init, [0, 2], 2, 10,
                                     MHSettings(burn_in=150, thin=3))
    z = result.samples.reshape(-1, 6)
    assert torch.all(z[:, 2:4] == torch.tensor([1.0, 1.5]))
    cond = target.condition([1], torch.tensor([1.0, 1.5]), 2)
    torch.testing.assert_close(z[:, [0, 1, 4, 5]].mean(0), cond.loc, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(z[:, [0, 1, 4, 5]].T), cond.covariance_matrix, atol=0.06, rtol=0)
