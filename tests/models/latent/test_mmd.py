import pytest
import torch

from mrfbench.models.latent.mmd import MMD_SCALES, rbf_mmd2


def direct_mmd2(x, y, scales=MMD_SCALES):
    """The definition, term by term: pooled distances, their median, one exp per scale, autograd throughout."""
    pooled = torch.cat([x, y])
    sq = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    h2 = sq.detach().median().clamp_min(1e-6)
    kernel = sum(torch.exp(-sq / (2 * s * h2)) for s in scales) / len(scales)
    n = len(x)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


@pytest.mark.parametrize(("n", "m", "spread", "scales"), [(64, 64, 1.0, MMD_SCALES), (50, 17, 1e-3, MMD_SCALES),
                                                          (3, 2, 5.0, MMD_SCALES), (40, 30, 1.0, (0.3, 1.0, 2.0))])
def test_mmd_and_its_gradient_match_the_definition(n, m, spread, scales):
    generator = torch.Generator().manual_seed(n + m)
    x = (spread * torch.randn(n, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    y = (spread * (torch.randn(m, 4, generator=generator, dtype=torch.float64) + 0.4)).requires_grad_()
    got, expected = rbf_mmd2(x, y, scales), direct_mmd2(x, y, scales)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, (x, y)), torch.autograd.grad(expected, (x, y))):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)


def test_mmd_is_zero_for_identical_sets_and_grows_with_a_mean_shift():
    torch.manual_seed(5)
    x = torch.randn(400, 3)
    assert rbf_mmd2(x, x).item() == pytest.approx(0.0, abs=1e-6)
    values = [rbf_mmd2(x, torch.randn(400, 3) + shift).item() for shift in (0.0, 0.3, 1.0, 3.0)]
    assert values[0] < 0.01 and all(a < b for a, b in zip(values, values[1:]))
    assert all(v >= 0 for v in values)
