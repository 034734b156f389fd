import pytest
import torch
from torch.distributions import Laplace, Normal, kl_divergence

from mrfbench.models.latent import (
    dreg_surrogate,
    factorised,
    gradient_scaled,
    log_mean_exp,
    mixture_log_prob,
    nonempty_subsets,
    product_of_experts,
)


def test_gaussian_product_of_experts_is_the_precision_weighted_product():
    loc, scale = torch.randn(5, 3, 2, dtype=torch.float64), torch.rand(5, 3, 2, dtype=torch.float64) + 0.2
    present = torch.tensor([True, False, True])
    poe = product_of_experts("gaussian", loc, scale, present, prior_expert=True)
    precision = 1 / scale[:, [0, 2]].pow(2)
    total = precision.sum(1) + 1.0
    torch.testing.assert_close(poe.loc, (precision * loc[:, [0, 2]]).sum(1) / total)
    torch.testing.assert_close(poe.scale, total.rsqrt())
    # the product's density is proportional to the product of the densities
    z = torch.randn(7, 5, 2, dtype=torch.float64)
    log_product = Normal(loc[:, 0], scale[:, 0]).log_prob(z) + Normal(loc[:, 2], scale[:, 2]).log_prob(z) \
        + Normal(0.0, 1.0).log_prob(z)
    difference = log_product - poe.log_prob(z)
    torch.testing.assert_close(difference, difference[:1].expand_as(difference))


def test_product_without_prior_expert_and_per_row_prior_flags():
    loc, scale = torch.randn(2, 3, 4), torch.rand(2, 3, 4) + 0.5
    single = product_of_experts("gaussian", loc, scale, torch.tensor([False, True, False]), prior_expert=False)
    torch.testing.assert_close(single.loc, loc[:, 1])
    torch.testing.assert_close(single.scale, scale[:, 1])
    rows = product_of_experts("gaussian", loc.unsqueeze(0), scale.unsqueeze(0),
                              torch.tensor([[[True, True, False]], [[True, True, False]]]),
                              prior_expert=torch.tensor([True, False])[:, None, None])
    assert torch.all(rows.scale[0] < rows.scale[1])  # the prior expert adds precision


def test_laplace_product_matches_moments_of_the_gaussian_product():
    loc, scale = torch.randn(3, 2), torch.rand(3, 2) + 0.3
    poe = product_of_experts("laplace", loc, scale, torch.ones(3, dtype=torch.bool), prior_expert=True)
    # each Laplace(m, b) enters as N(m, 2 b^2), the Laplace(0, 1) prior expert as N(0, 2)
    precision = 1 / (2 * scale.pow(2))
    total = precision.sum(0) + 0.5
    torch.testing.assert_close(poe.loc, (precision * loc).sum(0) / total)
    torch.testing.assert_close(poe.variance, 1 / total)
    assert isinstance(poe, Laplace)


def test_subsets_enumerate_all_non_empty_ones_full_set_last():
    for m in (2, 3, 5):
        subsets = nonempty_subsets(m)
        assert subsets.shape == (2**m - 1, m)
        assert len({tuple(row.tolist()) for row in subsets}) == 2**m - 1
        assert subsets.any(-1).all() and subsets[-1].all()
        assert torch.all(subsets.sum(-1).diff() >= 0)


def test_laplace_expert_parameterisation_and_kl_against_monte_carlo():
    raw = torch.randn(4, 3)
    q = factorised("laplace", torch.randn(4, 3), raw)
    torch.testing.assert_close(q.scale.sum(-1), torch.full((4,), 3.0 + 3e-6))
    x = torch.randn(10, 4, 3)
    manual = -torch.log(2 * q.scale) - (x - q.loc).abs() / q.scale
    torch.testing.assert_close(q.log_prob(x), manual)
    p = Laplace(torch.zeros(3), torch.ones(3))
    z = q.sample((400_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(kl_divergence(q, p), monte_carlo, atol=0.02, rtol=0.02)


def test_mixture_log_prob_is_the_log_of_the_average_density():
    experts = Normal(torch.randn(3, 2), torch.rand(3, 2) + 0.5)
    z = torch.randn(5, 1, 2)
    expected = torch.log(experts.log_prob(z).sum(-1).exp().mean(-1))
    torch.testing.assert_close(mixture_log_prob(experts, z, dim=-1), expected)
    torch.testing.assert_close(log_mean_exp(torch.zeros(4, 3), 0), torch.zeros(3))


def test_dreg_gradients_are_the_doubly_reparameterised_ones():
    """Encoder: sum_k w_k^2 dlog w_k/dz dz/dphi; decoder: the IWAE gradient sum_k w_k dlog w_k/dtheta; the
    value is the IWAE bound (what validation, and so the checkpoint choice, reads)."""
    torch.manual_seed(0)
    mu = torch.tensor([0.3, -0.2], requires_grad=True)
    theta = torch.tensor([0.5, 1.5], requires_grad=True)
    eps = torch.randn(6, 2)

    def log_weights(z):
        log_joint = Normal(theta, 1.0).log_prob(z).sum(-1)
        return log_joint - Normal(mu.detach(), 1.0).log_prob(z).sum(-1)

    z, scale = gradient_scaled(mu + eps)
    value = dreg_surrogate(log_weights(z), [scale], 0)
    torch.testing.assert_close(value, log_mean_exp(log_weights(mu.detach() + eps), 0))  # the IWAE bound
    value.backward()
    dreg_mu, dreg_theta = mu.grad.clone(), theta.grad.clone()

    mu.grad = theta.grad = None
    z = mu + eps
    lw = log_weights(z)
    w = torch.softmax(lw.detach(), 0)
    (w.pow(2) * lw).sum().backward(inputs=[mu])
    torch.testing.assert_close(dreg_mu, mu.grad)
    iwae_theta = torch.autograd.grad(log_mean_exp(log_weights(mu.detach() + eps), 0), theta)[0]
    torch.testing.assert_close(dreg_theta, iwae_theta)
    assert torch.isfinite(dreg_mu).all() and torch.isfinite(dreg_theta).all()


def test_dreg_gradients_inside_vmap_are_each_members_own():
    """A pack runs the surrogate under vmap: each member's gradients must be those it gets alone."""
    torch.manual_seed(0)
    mus, thetas, eps = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3, 6, 2)

    def member(mu, theta, eps):
        z, scale = gradient_scaled(mu + eps)
        log_w = Normal(theta, 1.0).log_prob(z).sum(-1) - Normal(mu.detach(), 1.0).log_prob(z).sum(-1)
        return dreg_surrogate(log_w, [scale], 0)

    packed = [mus.clone().requires_grad_(), thetas.clone().requires_grad_()]
    torch.func.vmap(member)(*packed, eps).sum().backward()
    for k in range(3):
        alone = [mus[k].clone().requires_grad_(), thetas[k].clone().requires_grad_()]
        member(*alone, eps[k]).backward()
        torch.testing.assert_close(packed[0].grad[k], alone[0].grad)
        torch.testing.assert_close(packed[1].grad[k], alone[1].grad)


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_unknown_expert_kind(kind):
    assert factorised(kind, torch.zeros(2), torch.zeros(2)).mean.shape == (2,)
    with pytest.raises(ValueError, match="unknown distribution"):
        factorised("cauchy", torch.zeros(2), torch.zeros(2))
