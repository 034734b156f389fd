import pytest
import torch
from torch.distributions import kl_divergence

from mrfbench.datasets import get_dataset
from mrfbench.errors import UsageError
from mrfbench.models import MODELS, build_model
from mrfbench.training import TrainConfig, train


@pytest.fixture(scope="module")
def data():
    return get_dataset("copula", n_train=512, n_val=128, n_test=64, seed=0).splits()


def test_registered_with_paper_capacity():
    assert "gmrf" in MODELS
    assert build_model("gmrf").capacity == 44
    assert build_model("gmrf", n_modalities=5, latent_dim=16, sparsity=0.84).capacity == 665


def test_posterior_blocks_follow_the_architecture(data):
    model = build_model("gmrf")
    x = data["test"][:8]
    q = model.posterior(x)
    assert q.loc.shape == (8, 8) and q.scale_tril.shape == (8, 8, 8)
    # the diagonal blocks (mean and L_ii) of modality 0 depend on x_0 only
    x2 = x.clone()
    x2[:, 1:] = torch.rand_like(x2[:, 1:])
    q2 = model.posterior(x2)
    torch.testing.assert_close(q2.loc[:, :2], q.loc[:, :2])
    torch.testing.assert_close(q2.scale_tril[:, :2, :2], q.scale_tril[:, :2, :2])
    assert not torch.allclose(q2.scale_tril[:, 2:, :2], q.scale_tril[:, 2:, :2])  # cross blocks are global


def test_loss_is_the_beta_elbo(data):
    model = build_model("gmrf", beta=0.5)
    x = data["test"][:16]
    torch.manual_seed(1)
    out = model.loss(x)
    torch.manual_seed(1)
    q = model.posterior(x)
    z = q.rsample()
    recon = model.likelihood.log_prob(x, model.decode(z)).sum(-1)
    expected = (-recon + 0.5 * kl_divergence(q, model.prior())).mean()
    torch.testing.assert_close(out.loss, expected)


def test_sampling_shapes(data):
    model = build_model("gmrf")
    assert model.sample(11).shape == (11, 4, 2)
    x = data["test"][:5]
    for observed in ([0], [1, 3], [0, 1, 2]):
        out = model.conditional_sample(x, observed, 7)
        assert out.shape == (5, 7, 4, 2)
        torch.testing.assert_close(out[:, :, observed], x[:, None, observed].expand(-1, 7, -1, -1))


def test_conditional_sample_reads_only_the_observed_modalities(data):
    model = build_model("gmrf")
    x = data["test"][:5]
    noisy = x.clone()
    noisy[:, 1:] = float("nan")
    torch.manual_seed(3)
    a = model.conditional_sample(x, [0], 4)
    torch.manual_seed(3)
    b = model.conditional_sample(noisy, [0], 4)
    torch.testing.assert_close(a, b)


def test_conditional_latents_follow_the_prior_conditional():
    """With a strongly correlated prior, the missing block must track the observed one."""
    model = build_model("gmrf")
    with torch.no_grad():
        model.prior_net.cross.zero_()
        model.prior_net.log_diag.fill_(-3.0)
        # z_1[0] = z_0[0] + e^-3 noise: L[2, 0] = L[0, 0] = e^-3
        rows, cols = model.layout.cross_rows, model.layout.cross_cols
        model.prior_net.cross[(rows == 2) & (cols == 0)] = torch.tensor(-3.0).exp()
        cond = model.prior().condition([0], torch.tensor([[2.0, 0.0]]), 2)
    assert cond.loc[0, 0].item() == pytest.approx(2.0, abs=1e-4)
    assert cond.loc[0, 1:].abs().max().item() < 1e-4  # the other missing coordinates stay at the prior mean
    assert cond.variance[0, 0].item() == pytest.approx(torch.tensor(-6.0).exp().item(), rel=1e-3)


def test_kl_per_block_and_invalid_config(data):
    model = build_model("gmrf")
    kl = model.kl_per_block(data["test"])
    assert kl.shape == (4,) and torch.all(kl >= 0)
    with pytest.raises(UsageError, match="beta"):
        build_model("gmrf", beta=-1.0)
    with pytest.raises(UsageError, match="no option"):
        build_model("gmrf", colour="red")
    with pytest.raises(UsageError, match="unknown model 'gmrff'.*gmrf"):
        build_model("gmrff")


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace"])
def test_training_lowers_the_loss(data, likelihood):
    torch.manual_seed(0)
    model = build_model("gmrf", likelihood=likelihood)
    result = train(model, data["train"], data["val"], TrainConfig(epochs=4, batch_size=64, lr=3e-3))
    losses = [h["val_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.5
    assert result.best_epoch == 1 + min(range(4), key=losses.__getitem__)


def test_conditional_latent_modes(data):
    x = data["test"][:3]
    mean_model = build_model("gmrf", conditional_latent="mean")
    assert mean_model.conditional_sample(x, [0], 2).shape == (3, 2, 4, 2)
    with pytest.raises(UsageError, match="conditional latent"):
        build_model("gmrf", conditional_latent="mode")


@pytest.mark.parametrize("name", ["gmrf", "almrf"])
def test_missing_blocks_at_the_conditional_mean(data, name):
    """conditional_missing="mean": every generation of a tuple decodes the prior conditional's mean (its
    observed block at the unimodal factor's mean too): one answer per tuple, that conditional's mean."""
    torch.manual_seed(0)
    model = build_model(name, conditional_missing="mean", conditional_latent="mean").eval()
    x = data["test"][:5]
    generated = model.conditional_sample(x, [1], 4)
    assert torch.allclose(generated[:, 0], generated[:, 3])
    z_obs = model.observed_latents(x, [1], 1)
    prior = model.prior()
    expected = (prior.condition([1], z_obs, 2) if name == "gmrf" else prior.condition([1], z_obs, 2).moment_matched()).mean
    assert torch.allclose(model.sample_missing([1], z_obs), expected)
    with pytest.raises(UsageError, match="conditional missing"):
        build_model(name, conditional_missing="mode")
