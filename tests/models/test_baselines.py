import random

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from mrfbench.datasets import get_dataset
from mrfbench.errors import UsageError
from mrfbench.models import build_model
from mrfbench.models.experts import Posteriors
from mrfbench.models.latent import standard
from mrfbench.training import TrainConfig, train

VARIANTS = [
    ("mvae", {}), ("mvae", {"specific_dim": 3}), ("mvae", {"dist": "laplace"}),
    ("mopoe", {}), ("mopoe", {"specific_dim": 3}), ("mopoe", {"dist": "laplace", "specific_dim": 3}),
    ("mmvae", {"objective": "elbo"}), ("mmvae", {"objective": "dreg", "n_samples": 4}),
    ("mmvae", {"objective": "iwae", "n_samples": 4, "specific_dim": 3, "dist": "laplace"}),
    ("mmvaeplus", {"n_samples": 4}), ("mmvaeplus", {"objective": "elbo", "dist": "laplace"}),
]


@pytest.fixture(scope="module")
def data():
    return get_dataset("copula", n_train=512, n_val=128, n_test=16, seed=0).splits()


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_each_variant_trains_with_falling_loss_and_samples_right(data, name, options):
    torch.manual_seed(0)
    model = build_model(name, **options)
    result = train(model, data["train"], data["val"], TrainConfig(epochs=4, batch_size=64, lr=3e-3, kl_warmup=0.0))
    losses = [h["val_loss"] for h in result.history]
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < losses[0]
    model.eval()
    assert model.sample(5).shape == (5, 4, 2)
    x = data["test"][:3]
    for observed in ([1], [0, 3]):
        out = model.conditional_sample(x, observed, 6)
        assert out.shape == (3, 6, 4, 2)
        torch.testing.assert_close(out[:, :, observed], x[:, None, observed].expand(-1, 6, -1, -1))
    kl = model.kl_per_block(data["test"])
    assert kl.shape == (4,) and torch.all(kl >= 0)


@pytest.mark.parametrize("name", ["mvae", "mopoe", "mmvae", "mmvaeplus"])
def test_capacity_matches_the_paper_setting(name):
    assert build_model(name, specific_dim=3).capacity == 48  # latent 3 per modality, factorised
    assert build_model("gmrf").capacity == 44


@pytest.mark.parametrize("objective", ["elbo", "iwae", "dreg"])
def test_mmvae_estimators_give_finite_gradients(data, objective):
    model = build_model("mmvae", objective=objective, n_samples=5, specific_dim=2)
    model.loss(data["train"][:32]).loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_mvae_reconstructs_only_the_modalities_of_each_subset(data):
    model = build_model("mvae", n_random_subsets=0)
    subsets = model.training_subsets()
    assert subsets.shape == (5, 4) and subsets[0].all() and torch.equal(subsets[1:], torch.eye(4, dtype=torch.bool))
    # a unimodal ELBO must not depend on the other modalities' decoders: zero their gradient
    x = data["train"][:16]
    post = model.encode(x)
    q = model.joint(post, subsets[1:2])
    member = subsets[1:2, None, :].expand(-1, 16, -1)
    recon = (model.reconstruction(x, model.decode(model.per_modality(q.rsample())), member) * member).sum()
    recon.backward()
    assert model.decoders.net[0].weight.grad[1:].abs().sum() == 0
    assert model.decoders.net[0].weight.grad[0].abs().sum() > 0


def test_mvae_collapse_report_sees_a_switched_off_expert(data):
    """MVAE's posterior given x_m is PoE(prior, expert): a wide expert far from 0 leaves it the prior (a
    collapsed block), though the expert's own KL is huge. Seen in a beta = 2.5 run: 2.5M nats, KL 0."""
    model = build_model("mvae")
    x = data["test"]
    post = model.encode(x)
    loc, scale = post.shared.loc.detach().clone(), post.shared.scale.detach().clone()
    loc[:, 1], scale[:, 1] = 50.0, 1e4
    model.encode = lambda _: Posteriors(Normal(loc, scale), None)
    kl = model.kl_per_block(x)
    assert kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1).mean(0)[1] > 1e4
    assert kl[1] < 1e-3 and kl[0] > kl[1]
    var = 1 / (1 + scale[:, 0] ** -2)  # the product with the standard prior, by hand
    by_hand = kl_divergence(Normal(loc[:, 0] * scale[:, 0] ** -2 * var, var.sqrt()), Normal(0.0, 1.0))
    torch.testing.assert_close(kl[0], by_hand.sum(-1).mean())


def test_mopoe_splits_the_batch_over_all_subsets(data):
    model = build_model("mopoe")
    assert len(model.subsets) == 15
    pick = model.component_of_each_datapoint(40, torch.device("cpu"))
    assert torch.bincount(pick, minlength=15).tolist() == [2] * 14 + [12]
    post = model.encode(data["test"][:4])
    q = model.subset_posteriors(post, model.subsets)
    single = model.subsets[0]  # a unimodal subset has no prior expert: its posterior is the expert itself
    torch.testing.assert_close(q.loc[0], post.shared.loc[:, int(single.nonzero())])


def test_mmvaeplus_cross_reconstructions_use_the_auxiliary_prior(data):
    model = build_model("mmvaeplus", n_samples=2)
    w = torch.randn(2, 3, 4, 3)
    cross = model.cross_specific(None, w)  # (K, B, R, M, S)
    for r in range(4):
        torch.testing.assert_close(cross[:, :, r, r], w[:, :, r])
    assert not torch.allclose(cross[:, :, 0, 1], w[:, :, 1])
    with pytest.raises(UsageError, match="specific"):
        build_model("mmvaeplus", specific_dim=0)


def test_invalid_baseline_options():
    with pytest.raises(UsageError, match="unknown dist 'student'; valid: gaussian, laplace"):
        build_model("mvae", dist="student")
    with pytest.raises(UsageError, match="objective 'vae'"):
        build_model("mmvae", objective="vae")
    with pytest.raises(UsageError, match="set dist, not likelihood"):  # once accepted and ignored
        build_model("mvae", likelihood="laplace")
    assert build_model("mopoe", dist="laplace", likelihood="laplace").config.likelihood == "laplace"


@pytest.mark.parametrize(("name", "options", "objective", "k"), [
    ("mmvae", {}, "elbo", 1), ("mmvae", {"objective": "dreg"}, "dreg", 10),
    ("mmvae", {"objective": "iwae", "n_samples": 3}, "iwae", 3), ("mmvaeplus", {}, "dreg", 10),
    ("mmvaeplus", {"objective": "elbo"}, "elbo", 1), ("mmvaeplus", {"n_samples": 1}, "dreg", 1),
])
def test_mixture_objective_defaults(name, options, objective, k):
    config = build_model(name, **options).config
    assert (config.objective, config.n_samples) == (objective, k)


def test_mvae_loss_decodes_only_members_and_equals_the_masked_full_decode(data):
    """The loss decodes, per modality, only the subsets holding it; the result must equal decoding every
    modality from every subset's z and masking the terms outside each subset."""
    model = build_model("mvae", specific_dim=2, n_random_subsets=2)
    x = data["train"][:32]
    random.seed(1), torch.manual_seed(1)
    fast = model.loss(x).loss
    random.seed(1), torch.manual_seed(1)
    post = model.encode(x)
    subsets = model.training_subsets()
    q = model.joint(post, subsets)
    z, w = q.rsample(), post.specific.rsample()
    member = subsets[:, None, :].expand(-1, len(x), -1)
    recon = (model.reconstruction(x, model.decode(model.per_modality(z), w), member) * member).sum(-1)
    kl = kl_divergence(q, standard("gaussian", q.loc)).sum(-1)
    kl = kl + (member * kl_divergence(post.specific, standard("gaussian", post.specific.loc)).sum(-1)).sum(-1)
    torch.testing.assert_close(fast, (-recon + kl).sum(0).mean())


def test_mmvaeplus_refuses_an_unknown_objective():
    from mrfbench.errors import UsageError

    with pytest.raises(UsageError, match="objective"):
        build_model("mmvaeplus", objective="foo")
