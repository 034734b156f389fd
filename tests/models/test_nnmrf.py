import pytest
import torch

from mrfbench.errors import UsageError
from mrfbench.models import build_model
from mrfbench.models.latent import FullCovGaussian, log_mean_exp
from mrfbench.models.mrf_parts import MRFPotentials

FAST_MH = {"mh_chains": 256, "mh_burn_in": 20, "mh_thin": 2, "collapse_samples": 512}


@pytest.fixture(scope="module")
def data(copula_splits):
    return copula_splits


def test_local_energy_carries_every_term_that_changes_with_its_block():
    torch.manual_seed(0)
    energy = MRFPotentials(4, 2, 16, confinement=1.0)
    z = torch.randn(10, 8)
    for block in range(4):
        moved = z.clone()
        moved[:, 2 * block : 2 * block + 2] += torch.randn(10, 2)
        torch.testing.assert_close(energy(moved) - energy(z), energy.local(moved, block) - energy.local(z, block))


def test_confinement_makes_the_energy_grow_quadratically():
    torch.manual_seed(0)
    energy = MRFPotentials(4, 2, 16, confinement=1.0)
    direction = torch.randn(8)
    values = torch.stack([energy(r * direction) for r in (10.0, 100.0, 1000.0)])
    assert values[2] > 50 * values[1] > 0  # ReLU potentials grow at most linearly; the base measure wins


def test_loss_is_eq_15_with_the_importance_sampled_log_partition(data):
    model = build_model("nnmrf", beta=0.5, n_importance=4)
    x = data["test"][:16]
    advance, chains = model.advance_chains, []
    model.advance_chains = lambda start=None: chains.append(advance(start)) or chains[-1]
    torch.manual_seed(2)
    out = model.loss(x)
    torch.manual_seed(2)
    q = model.posterior(x)
    z = q.rsample((4,))
    recon = model.likelihood.log_prob(x, model.decode(z)).sum(-1).mean(0)
    energy, log_q = model.prior_net(z), q.log_prob(z)
    log_z = log_mean_exp(-energy - log_q, 0)
    # Eq. 15 term by term: - E_q[ln q] - E_q[E] - ln Z, with Monte Carlo expectations
    elbo = recon - log_q.mean(0) - energy.mean(0) - log_z
    torch.testing.assert_close(out.loss, (-recon + 0.5 * (recon - elbo)).mean())
    assert out.terms["kl"] >= 0  # a Jensen gap: never negative


def test_trains_with_falling_loss(data, assert_trains):
    assert_trains(build_model("nnmrf", **FAST_MH), data)


@pytest.mark.parametrize("conditional_latent", ["mean", "sample"])
def test_sampling_shapes_acceptance_and_observed_copies(data, conditional_latent):
    model = build_model("nnmrf", conditional_latent=conditional_latent, **FAST_MH)
    x = data["test"][:5]
    diagnostics = {}
    assert model.sample(300, diagnostics).shape == (300, 4, 2)
    assert 0.1 < diagnostics["mh_acceptance_unconditional"] < 0.7
    out = model.conditional_sample(x, [1, 3], 6, diagnostics)
    assert out.shape == (5, 6, 4, 2) and torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :, [1, 3]], x[:, None, [1, 3]].expand(-1, 6, -1, -1))
    assert 0.1 < diagnostics["mh_acceptance_given_1_3"] < 0.9 and not vars(model).get("sampler_diagnostics")
    kl = model.kl_per_block(x)
    assert kl.shape == (4,) and torch.isfinite(kl).all()


def test_conditional_sampling_keeps_the_observed_latents_fixed():
    """Every state the conditional chains evaluate holds the given observed blocks (0 and 2) unchanged."""
    model = build_model("nnmrf", **FAST_MH)
    z_obs = torch.randn(3, 1, 4).expand(-1, 5, -1)
    local, held = model.prior_net.energy.local, []
    model.prior_net.energy.local = lambda z, block: held.append(z[..., [0, 1, 4, 5]].clone()) or local(z, block)
    draws = model.sample_missing([0, 2], z_obs)
    assert draws.shape == (3, 5, 4) and len(held) > 10
    assert all(torch.equal(state, z_obs[:, 0].repeat_interleave(len(state) // 3, 0)) for state in held)
    assert not torch.equal(draws[:, 0], draws[:, 1])  # the missing blocks do move


def test_prior_sampler_recovers_a_quadratic_energy():
    """Potentials replaced by a Gaussian energy: Metropolis-Hastings must return its mean and covariance."""
    torch.manual_seed(0)
    target = FullCovGaussian(torch.tensor([0.5, -0.5, 1.0, 0.0, 0.3, -0.2, 0.0, 0.4]),
                             torch.linalg.cholesky(0.5 * torch.eye(8) + 0.3))
    model = build_model("nnmrf", mh_chains=2000, mh_burn_in=150, mh_thin=3)
    model.prior_net.energy.forward = lambda z: -target.log_prob(z)
    model.prior_net.energy.local = lambda z, block: -target.log_prob(z)
    z = model.sample_latents(20_000)
    torch.testing.assert_close(z.mean(0), target.loc, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), target.covariance_matrix, atol=0.08, rtol=0)


@pytest.mark.slow
def test_prior_learned_from_its_own_samples_matches_a_known_gaussian():
    """The "sampled" ln Z gradient, -E_p[grad E] over the persistent chains, fits the energy by maximum
    likelihood to draws of a known correlated Gaussian: the learned prior's own samples must match it."""
    torch.manual_seed(0)
    cov = 0.3 * torch.eye(8) + 0.2 + 0.2 * torch.block_diag(*[torch.ones(2, 2)] * 4)
    target = FullCovGaussian(torch.tensor([0.5, -0.5, 1.0, 0.0, 0.3, -0.2, 0.0, 0.4]), torch.linalg.cholesky(cov))
    model = build_model("nnmrf", mh_chains=2000, mh_burn_in=150, mh_thin=3)
    optimizer = torch.optim.Adam(model.prior_net.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 800)
    for _ in range(800):
        data = target.sample((256,))
        loss = model.prior_net(data).mean() - model.prior_net(model.advance_chains()).mean()  # -ln p(data) + const
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    z = model.sample_latents(20_000)
    torch.testing.assert_close(z.mean(0), target.loc, atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), cov, atol=0.1, rtol=0)
    assert model.prior_net.chains.shape == (512, 8) and not any("chains" in k for k in model.state_dict())


def test_sampled_partition_gives_the_prior_a_contrastive_gradient(data):
    """With partition="sampled" the loss value is Eq. 15's, and the energy's gradient is
    beta (E_q[grad E] - E_chains[grad E]), which Eq. 15's estimate nearly cancels."""
    model = build_model("nnmrf", beta=0.5, n_importance=4)
    x = data["test"][:16]
    advance, chains = model.advance_chains, []
    model.advance_chains = lambda start=None: chains.append(advance(start)) or chains[-1]
    torch.manual_seed(2)
    out = model.loss(x)
    out.loss.backward()
    reference = build_model("nnmrf", beta=0.5, n_importance=4, partition="posterior")
    reference.load_state_dict(model.state_dict())
    torch.manual_seed(2)
    assert reference.loss(x).loss.item() == pytest.approx(out.loss.item(), rel=1e-5)
    grads = {name: p.grad for name, p in model.prior_net.named_parameters()}
    model.zero_grad()
    torch.manual_seed(2)
    q = model.posterior(x)
    z = q.rsample((4,))
    (0.5 * (model.prior_net(z).mean() - model.prior_net(chains[0]).mean())).backward()
    for name, p in model.prior_net.named_parameters():
        torch.testing.assert_close(grads[name], p.grad)


def test_invalid_options():
    with pytest.raises(UsageError, match="n importance"):
        build_model("nnmrf", n_importance=1)
    with pytest.raises(UsageError, match="confinement"):
        build_model("nnmrf", confinement=-1.0)
    with pytest.raises(UsageError, match="mh chains"):
        build_model("nnmrf", mh_chains=0)


def test_experimental_mrf_gives_finite_gradients_to_every_part_and_samples(data):
    torch.manual_seed(0)
    model = build_model("mrf", **FAST_MH)
    assert model.experimental and model.capacity == 16
    out = model.loss(data["test"][:16])
    out.loss.backward()
    assert out.terms["recon"] == pytest.approx(out.loss.item())
    for part in (model.decoders, model.posterior_net.encoder, model.prior_net, model.posterior_net.pairs):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert model.sample(50).shape == (50, 4, 2)
    assert model.conditional_sample(data["test"][:3], [2], 4).shape == (3, 4, 4, 2)
    assert torch.isfinite(model.kl_per_block(data["test"][:8])).all()


class Quadratic(torch.nn.Module):
    """E(z) = |z|^2 / 2: the standard normal, whose normaliser is (2 pi)^(D/2)."""

    def forward(self, z):
        return 0.5 * z.pow(2).sum(-1)


def test_batch_proposal_estimates_the_log_partition_that_eq_15_misses():
    """Narrow posteriors spread over the prior: the batch's aggregate posterior covers the prior and recovers
    ln Z; each point's own posterior only sees a sliver of it (Eq. 15's estimate is far below)."""
    torch.manual_seed(0)
    model = build_model("nnmrf", n_importance=8)
    q = FullCovGaussian(torch.randn(512, 8), 0.3 * torch.eye(8).expand(512, 8, 8))
    z = q.sample((8,))
    energy, log_q = Quadratic()(z), q.log_prob(z)
    truth = 4 * torch.log(torch.tensor(2 * torch.pi))
    model.config.partition = "batch"
    batch = model.log_partition(q, z, energy, log_q)
    model.config.partition = "posterior"
    per_point = model.log_partition(q, z, energy, log_q)
    assert batch.shape == () and abs(batch - truth) < 0.5
    assert (per_point < truth - 2).float().mean() > 0.9


def test_trains_with_the_batch_proposal(data, assert_trains):
    assert_trains(build_model("nnmrf", partition="batch", **FAST_MH), data)
    with pytest.raises(UsageError, match="partition"):
        build_model("nnmrf", partition="prior")
    with pytest.raises(UsageError, match="pcd restart"):
        build_model("nnmrf", pcd_restart=1.5)


def test_experimental_mrf_conditions_only_on_parts_its_loss_trains(data, monkeypatch):
    """The MRF (App. E) once inherited the GMRF's conditional draw of the observed latents, from within-block
    Cholesky outputs its loss never trains. Built from its own parts, its encoder has no such outputs, and
    the observed latents are draws of the unary potentials its loss trains."""
    torch.manual_seed(0)
    model = build_model("mrf", conditional_latent="sample", **FAST_MH)
    d, x = model.config.latent_dim, data["test"][:4]
    assert model.posterior_net.encoder.heads(torch.zeros(1, 4, model.config.hidden)).shape == (1, 4, 2 * d)
    drawn = []
    monkeypatch.setattr(model, "sample_missing", lambda observed, z_obs, diagnostics=None: drawn.append(z_obs) or z_obs[..., :4])
    torch.manual_seed(1)
    assert model.conditional_sample(x, [0, 2], 3).shape == (4, 3, 4, 2)
    x_in = torch.zeros_like(x)
    x_in[:, [0, 2]] = x[:, [0, 2]]
    mu, log_scale = model.posterior_net.unary(x_in)
    idx = [0, 1, 4, 5]
    torch.manual_seed(1)
    expected = mu[:, None, idx] + log_scale[:, None, idx].exp() * torch.randn(4, 3, 2 * d)
    torch.testing.assert_close(drawn[0], expected)
