import pytest
import torch
from torch.distributions import Laplace, Normal

from mrfbench.errors import UsageError
from mrfbench.models import MODELS
from mrfbench.models.networks import GroupedMLP, Likelihood


def test_grouped_mlp_applies_one_independent_network_per_modality():
    net = GroupedMLP(3, [2, 5, 4])
    x = torch.randn(6, 3, 2)
    out = net(x)
    assert out.shape == (6, 3, 4)
    first, second = net.net[0], net.net[2]
    for g in range(3):
        expected = torch.relu(x[:, g] @ first.weight[g] + first.bias[g]) @ second.weight[g] + second.bias[g]
        torch.testing.assert_close(out[:, g], expected)
    assert net(torch.randn(7, 2, 3, 2)).shape == (7, 2, 3, 4)  # extra batch dimensions


def test_grouped_mlp_gives_the_same_values_in_inference_blocks_and_layouts(monkeypatch):
    import mrfbench.models.networks as networks

    net, x = GroupedMLP(3, [2, 16, 4], final_relu=True), torch.randn(50, 3, 2)
    with torch.no_grad():
        whole = net(x)  # the narrow last layer multiplied transposed
        monkeypatch.setattr(networks, "INFERENCE_BLOCK", 8)
        torch.testing.assert_close(net(x), whole, rtol=1e-5, atol=1e-6)  # to rounding: GEMM blocks by rows
    trained = net(x)
    assert trained.requires_grad  # with gradients, one pass in the plain layout
    torch.testing.assert_close(trained.detach(), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_networks_of_some_modalities_give_those_modalities_values(architecture):
    from mrfbench.models.networks import ConvDecoder, ConvEncoder

    if architecture == "mlp":
        pairs = [(GroupedMLP(4, [3, 16, 16, 2]), torch.randn(5, 4, 3))]
    else:
        pairs = [(ConvDecoder(4, 3, 2), torch.randn(5, 4, 3)), (ConvEncoder(4, 2, 6), torch.rand(5, 4, 2 * 784))]
    groups = [3, 1]
    for net, x in pairs:
        with torch.no_grad():
            torch.testing.assert_close(net(x[:, groups], groups), net(x)[:, groups])


@pytest.mark.parametrize(("kind", "dist"), [("gaussian", Normal), ("laplace", Laplace)])
def test_learned_scale_likelihood_matches_torch(kind, dist):
    lik = Likelihood(kind, 2, 3, scale="learned")
    with torch.no_grad():
        lik.log_scale.copy_(torch.randn(2, 3))
    x, loc = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    torch.testing.assert_close(lik.log_prob(x, loc), dist(loc, lik.log_scale.exp()).log_prob(x).sum(-1))


def test_optimal_scale_is_the_maximum_likelihood_scale():
    x, loc = torch.randn(400, 2, 3), torch.randn(400, 2, 3)
    gaussian = Likelihood("gaussian", 2, 3, scale="optimal")
    torch.testing.assert_close(gaussian.scale(x, loc), (x - loc).pow(2).mean(0).sqrt())
    laplace = Likelihood("laplace", 2, 3, scale="optimal")
    torch.testing.assert_close(laplace.scale(x, loc), (x - loc).abs().mean(0))
    # the total log-likelihood is maximal at that scale
    best = gaussian.log_prob(x, loc).sum()
    for factor in (0.9, 1.1):
        assert Normal(loc, gaussian.scale(x, loc) * factor).log_prob(x).sum() < best
    assert not list(gaussian.parameters())


@pytest.mark.parametrize(("kind", "dist"), [("gaussian", Normal), ("laplace", Laplace)])
def test_unit_scale_averaged_over_features_is_the_mean_error(kind, dist):
    """``scale="unit", reduction="mean"``: the reconstruction the paper's image beta grid is weighed against,
    up to a constant (half the mean squared error for Gaussian, the mean absolute error for Laplace)."""
    lik = Likelihood(kind, 2, 3, scale="unit", reduction="mean")
    x, loc = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    torch.testing.assert_close(lik.log_prob(x, loc), dist(loc, torch.ones(())).log_prob(x).mean(-1))
    error = 0.5 * (x - loc).pow(2) if kind == "gaussian" else (x - loc).abs()
    constant = dist(torch.zeros(()), torch.ones(())).log_prob(torch.zeros(()))
    torch.testing.assert_close(lik.log_prob(x, loc), constant - error.mean(-1))
    assert not list(lik.parameters())


def test_unknown_likelihood_options_are_usage_errors():
    with pytest.raises(UsageError, match="likelihood 'poisson'"):
        Likelihood("poisson", 1, 1)
    with pytest.raises(UsageError, match="scale 'fixed'"):
        Likelihood("gaussian", 1, 1, scale="fixed")
    with pytest.raises(UsageError, match="reconstruction 'max'"):
        Likelihood("gaussian", 1, 1, reduction="max")


def test_conv_networks_keep_modalities_apart_and_shape_images():
    from mrfbench.models.networks import ConvDecoder, ConvEncoder

    encoder, decoder = ConvEncoder(5, 3, 64), ConvDecoder(5, 8, 3)
    x = torch.rand(4, 5, 3 * 784)
    h = encoder(x)
    assert h.shape == (4, 5, 64) and decoder(torch.randn(2, 4, 5, 8)).shape == (2, 4, 5, 3 * 784)
    moved = x.clone()
    moved[:, 1] = torch.rand(4, 3 * 784)
    h2 = encoder(moved)
    torch.testing.assert_close(h2[:, [0, 2, 3, 4]], h[:, [0, 2, 3, 4]])  # grouped: no mixing across modalities
    assert not torch.allclose(h2[:, 1], h[:, 1])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_runs_on_images_with_the_conv_architecture(name):
    from mrfbench.models import build_model

    extra = {"nnmrf": {"mh_chains": 32, "mh_burn_in": 2, "collapse_samples": 64},
             "mrf": {"pcd_chains": 32}}.get(name, {})
    model = build_model(name, n_modalities=5, modality_dim=3 * 784, architecture="conv", latent_dim=4, **extra)
    x = torch.rand(6, 5, 3 * 784)
    model.loss(x).loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.sample(3).shape == (3, 5, 3 * 784)
    assert model.conditional_sample(x[:2], [0, 2], 2).shape == (2, 2, 5, 3 * 784)


def test_conv_architecture_needs_image_modalities():
    from mrfbench.errors import UsageError
    from mrfbench.models import build_model

    with pytest.raises(UsageError, match="28 x 28"):
        build_model("gmrf", architecture="conv")
    with pytest.raises(UsageError, match="unknown architecture"):
        build_model("gmrf", architecture="resnet")


@pytest.mark.parametrize("layers, hidden", [(3, 256), (4, 1024)])
def test_mlp_depth_follows_the_papers_tables(layers, hidden):
    """Copula (Table 3): encoder 2 -> 256 -> 256 then heads, decoder latent -> 256 -> 256 -> 2. MNIST-3
    (Appendix D.2): four layers of 1024 on each side."""
    from mrfbench.models.base import ModelConfig
    from mrfbench.models.networks import GroupedLinear, modality_decoder, modality_encoder

    config = ModelConfig(n_modalities=3, modality_dim=784 if layers == 4 else 2, hidden=hidden, mlp_layers=layers)
    encoder, decoder = modality_encoder(config, hidden), modality_decoder(config, 8)

    def shapes(net):
        return [tuple(m.weight.shape[1:]) for m in net.modules() if isinstance(m, GroupedLinear)]

    d = config.modality_dim
    assert shapes(encoder) == [(d, hidden)] + [(hidden, hidden)] * (layers - 2)  # + the model's heads
    assert shapes(decoder) == [(8, hidden)] + [(hidden, hidden)] * (layers - 2) + [(hidden, d)]
