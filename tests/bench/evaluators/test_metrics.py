import numpy as np
import ot
import pytest
import torch

from mrfbench.evaluators.metrics import (
    kendall_tau_matrix,
    random_directions,
    sliced_wasserstein,
    sort_along,
    w1_to_reference,
    w1_to_uniform,
)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("shape", [(300_000,), (70_000, 3), (3, 70_000), (40, 2_000, 2), (5, 3)])
def test_sort_along_threads_equals_numpys_sort(two_threads, shape):
    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    for axis in range(len(shape)):
        np.testing.assert_array_equal(sort_along(x, axis), np.sort(x, axis=axis))
    np.testing.assert_array_equal(x, np.random.default_rng(5).normal(size=shape).astype(np.float32))  # input kept
    fresh = x.copy()
    assert sort_along(fresh, -1, copy=False) is fresh  # sorted where it is
    np.testing.assert_array_equal(fresh, np.sort(x, axis=-1))


def test_w1_to_uniform_is_the_same_on_one_thread_or_two(two_threads):
    x = np.random.default_rng(6).uniform(size=(40_000, 5)).astype(np.float32)
    threaded = w1_to_uniform(x)
    torch.set_num_threads(1)
    np.testing.assert_array_equal(w1_to_uniform(x), threaded)


def test_w1_to_uniform_matches_pot_against_a_fine_uniform_grid():
    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(size=5000), rng.uniform(size=5000) * 1.2 - 0.1, rng.beta(2, 2, size=5000)], 1)
    grid = (np.arange(1_000_000) + 0.5) / 1_000_000
    expected = [ot.wasserstein_1d(x[:, i], grid, p=1) for i in range(3)]
    np.testing.assert_allclose(w1_to_uniform(x), expected, atol=2e-6)


def test_w1_to_uniform_of_a_constant_and_of_a_shift():
    assert w1_to_uniform(np.full((100, 1), 0.5))[0] == pytest.approx(0.25)
    grid = (np.arange(10_000) + 0.5) / 10_000
    assert w1_to_uniform((grid + 0.3)[:, None])[0] == pytest.approx(0.3, abs=1e-4)


def test_w1_noise_floor_shrinks_like_one_over_root_n():
    rng = np.random.default_rng(1)
    small = w1_to_uniform(rng.uniform(size=(20_000, 8))).mean()
    large = w1_to_uniform(rng.uniform(size=(1_000_000, 8))).mean()
    assert 1e-3 < small < 3.5e-3  # about 1.9-2.2 x1000 at n = 20k
    assert large < 5e-4 and small / large == pytest.approx(np.sqrt(50), rel=0.45)


def test_w1_to_reference_is_columnwise_pot_pooled_and_per_group():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(6, 50, 2)).astype(np.float32)
    a, b = ref + 0.5, rng.normal(size=(6, 50, 2)).astype(np.float32)
    pooled = w1_to_reference(ref.reshape(300, 2), a.reshape(300, 2), b.reshape(300, 2))
    flat = lambda x: x.reshape(300, 2).astype(np.float64)  # noqa: E731
    for sample, got in zip((a, b), pooled):
        np.testing.assert_allclose(got, [ot.wasserstein_1d(flat(sample)[:, i], flat(ref)[:, i], p=1)
                                         for i in range(2)], rtol=1e-6)
    np.testing.assert_allclose(pooled[0], [0.5, 0.5], rtol=1e-6)
    (per_group,) = w1_to_reference(ref, b, axis=1)
    b64, ref64 = b.astype(np.float64), ref.astype(np.float64)
    expected = np.mean([[ot.wasserstein_1d(b64[g, :, i], ref64[g, :, i], p=1) for i in range(2)] for g in range(6)], 0)
    np.testing.assert_allclose(per_group, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="equal shapes"):
        w1_to_reference(ref, a[:5])


def test_sliced_wasserstein_equals_pot_and_sees_dependence():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 2))
    dependent = np.stack([x[:, 0], 0.9 * x[:, 0] + np.sqrt(1 - 0.81) * x[:, 1]], 1)
    independent = rng.normal(size=(3000, 2))
    directions = random_directions(2, 64, seed=7)
    same_law = np.stack([rng.normal(size=3000), rng.normal(size=3000)], 1)
    far, near = sliced_wasserstein(independent, dependent, same_law, n_projections=64, seed=7)
    assert far == pytest.approx(ot.sliced_wasserstein_distance(dependent, independent, projections=directions),
                                rel=1e-5)
    assert near == pytest.approx(ot.sliced_wasserstein_distance(same_law, independent, projections=directions),
                                 rel=1e-5)
    assert far > 5 * near
    with pytest.raises(ValueError, match="equal size"):
        sliced_wasserstein(independent, dependent[:10], n_projections=4, seed=0)


def test_kendall_tau_matrix_is_symmetric_with_unit_diagonal():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2000, 3))
    x[:, 2] = -x[:, 0]
    tau = kendall_tau_matrix(x)
    assert np.allclose(np.diag(tau), 1) and np.allclose(tau, tau.T) and tau[0, 2] == pytest.approx(-1)




def test_kendall_tau_matrix_is_scipys_to_the_last_bit():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(5)
    for n in (2, 3, 31, 33, 1000, 5000):
        continuous = rng.normal(size=(n, 2)).astype(np.float32)
        continuous[:, 1] += continuous[:, 0]
        tied = rng.integers(0, 4, size=(n, 2)).astype(float)
        x = np.concatenate([continuous, tied, np.zeros((n, 1))], axis=1)
        tau = kendall_tau_matrix(x)
        for i, j in zip(*np.triu_indices(x.shape[1], 1)):
            expected = np.nan if j == 4 else kendalltau(x[:, i], x[:, j]).statistic
            np.testing.assert_array_equal(tau[i, j], expected)
    assert np.isnan(kendall_tau_matrix(np.ones((1, 2)))[0, 1])
