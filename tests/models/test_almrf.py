import pytest
import torch

from mrfbench.errors import UsageError
from mrfbench.models import build_model
from mrfbench.models.latent import AsymmetricLaplace, rbf_mmd2


@pytest.fixture(scope="module")
def data(copula_splits):
    return copula_splits


def test_prior_and_posterior_are_asymmetric_laplace_with_the_gmrf_capacity(data):
    model = build_model("almrf")
    assert model.capacity == 44
    q = model.posterior(data["test"][:8])
    assert isinstance(q, AsymmetricLaplace) and isinstance(model.prior(), AsymmetricLaplace)
    assert q.skew.shape == (8, 8) and q.scale_tril.shape == (8, 8, 8)


def test_loss_is_reconstruction_plus_beta_log_one_plus_mmd(data):
    model = build_model("almrf", beta=0.7)
    x = data["test"][:32]
    torch.manual_seed(1)
    out = model.loss(x)
    torch.manual_seed(1)
    z = model.posterior(x).rsample()
    recon = model.likelihood.log_prob(x, model.decode(z)).sum(-1)
    expected = -recon.mean() + 0.7 * torch.log1p(rbf_mmd2(z, model.prior().rsample((32,))))
    torch.testing.assert_close(out.loss, expected)


def test_trains_with_falling_loss_and_finite_gradients(data, assert_trains):
    assert_trains(build_model("almrf"), data, epochs=8)  # its learned decoder scale starts at 1


@pytest.mark.parametrize("conditional", ["moment-matched", "exact"])
def test_sampling_shapes_and_observed_copies(data, conditional):
    model = build_model("almrf", conditional=conditional)
    x = data["test"][:5]
    assert model.sample(11).shape == (11, 4, 2)
    for observed in ([0], [1, 3], [0, 1, 2]):
        out = model.conditional_sample(x, observed, 6)
        assert out.shape == (5, 6, 4, 2) and torch.isfinite(out).all()
        torch.testing.assert_close(out[:, :, observed], x[:, None, observed].expand(-1, 6, -1, -1))


def test_missing_blocks_follow_the_prior_conditional():
    """A prior coupling z_1[0] tightly to z_0[0]: the conditional draws must track the observed value."""
    model = build_model("almrf", conditional="exact")
    with torch.no_grad():
        model.prior_net.cross.zero_()
        model.prior_net.log_diag.fill_(-3.0)
        model.prior_net.loc.fill_(0.2)
        rows, cols = model.layout.cross_rows, model.layout.cross_cols
        model.prior_net.cross[(rows == 2) & (cols == 0)] = torch.tensor(-3.0).exp()
    z_obs = torch.tensor([[1.5, 0.0]]).expand(4000, -1)
    for kind in ("exact", "moment-matched"):
        model.config.conditional = kind
        draws = model.sample_missing([0], z_obs)
        assert draws[:, 0].mean().item() == pytest.approx(1.5, abs=0.05)


def test_kl_per_block_is_a_finite_monte_carlo_estimate(data):
    kl = build_model("almrf", kl_samples=16).kl_per_block(data["test"][:16])
    assert kl.shape == (4,) and torch.isfinite(kl).all()


def test_invalid_options():
    with pytest.raises(UsageError, match="conditional"):
        build_model("almrf", conditional="approximate")
    with pytest.raises(UsageError, match="kl samples"):
        build_model("almrf", kl_samples=0)


def test_kl_per_block_reads_posteriors_narrower_than_float32(data):
    """Block 0's posterior with Sigma's scales at e^-130 (0 in float32; a trained ALMRF had e^-139, which the
    MMD objective lets happen): the AL law mW + sqrt(W) X stays two-dimensional as Sigma degenerates, so its
    KL is finite and the same as at e^-40."""

    def kl_at(log_scale: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = build_model("almrf", kl_samples=16)
        d = model.config.latent_dim
        head = model.posterior_net.encoder.heads.net[-1]
        with torch.no_grad():
            head.weight[0, :, d : 2 * d] = 0.0
            head.bias[0, :, d : 2 * d] = log_scale
        torch.manual_seed(1)
        return model.kl_per_block(data["test"][:16])

    narrow = kl_at(-130.0)
    assert torch.isfinite(narrow).all()
    assert torch.allclose(narrow, kl_at(-40.0), rtol=1e-4)
