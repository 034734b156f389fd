import numpy as np
import pytest
from scipy.special import ndtri
from scipy.stats import kstest

from mrfbench.datasets import get_dataset
from mrfbench.datasets.copula import GaussianCopula
from mrfbench.errors import UsageError


@pytest.fixture(scope="module")
def sample():
    return GaussianCopula().sample(50_000, np.random.default_rng(0))


def test_every_coordinate_is_uniform(sample):
    assert sample.shape == (50_000, 4, 2)
    for m in range(4):
        for j in range(2):
            assert kstest(sample[:, m, j], "uniform").pvalue > 1e-3


def test_correlation_sign_pattern_of_both_coordinates(sample):
    scores = ndtri(sample.astype(np.float64))
    corr1 = np.corrcoef(scores[:, :, 0].T)
    corr2 = np.corrcoef(scores[:, :, 1].T)
    k = np.arange(1, 5)
    expected1 = 0.9 * (-1.0) ** (k[:, None] + k[None, :])  # coordinate 1 alternates
    np.fill_diagonal(expected1, 1.0)
    np.testing.assert_allclose(corr1, expected1, atol=0.01)
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(corr2[off], 0.9, atol=0.01)  # coordinate 2 all positive
    assert np.abs(np.corrcoef(scores[:, 0, 0], scores[:, 0, 1])[0, 1]) < 0.02  # coordinates independent


def test_exact_kendall_tau_matches_samples(sample):
    from scipy.stats import kendalltau

    law = GaussianCopula()
    tau = law.kendall_tau()
    assert tau[0, 0, 1] == pytest.approx(-2 / np.pi * np.arcsin(0.9))
    assert kendalltau(sample[:10_000, 0, 1], sample[:10_000, 2, 1]).statistic == pytest.approx(tau[1, 0, 2], abs=0.02)


def test_conditional_sampler_matches_the_joint_law():
    """Samples drawn given modality 1 from joint draws must have the joint law again."""
    law = GaussianCopula()
    rng = np.random.default_rng(1)
    joint = law.sample(40_000, rng)
    cond = law.conditional_sample(joint[:, 1], 1, 1, rng)[:, 0]
    assert np.array_equal(cond[:, 1], joint[:, 1])
    for j in range(2):
        np.testing.assert_allclose(np.corrcoef(ndtri(cond[:, :, j].astype(np.float64)).T),
                                   law.correlations[j], atol=0.015)
    assert kstest(cond[:, 3, 0], "uniform").pvalue > 1e-3


def test_splits_are_seeded_and_sized():
    a = get_dataset("copula", n_train=100, n_val=20, n_test=30, seed=5).splits()
    b = get_dataset("copula", n_train=100, n_val=20, n_test=30, seed=5).splits()
    c = get_dataset("copula", n_train=100, n_val=20, n_test=30, seed=6).splits()
    assert {k: tuple(v.shape) for k, v in a.items()} == {"train": (100, 4, 2), "val": (20, 4, 2), "test": (30, 4, 2)}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(UsageError, match="unknown data set 'mnist9'.*copula"):
        get_dataset("mnist9")
