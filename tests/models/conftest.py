import pytest

from mrfbench.datasets import get_dataset
from mrfbench.training import TrainConfig, train


@pytest.fixture(scope="session")
def copula_splits():
    """Small copula splits for model tests: 512 train, 128 validation, 64 test tuples."""
    return get_dataset("copula", n_train=512, n_val=128, n_test=64, seed=0).splits()


@pytest.fixture
def assert_trains():
    """The check that a model learns, as a function: ``assert_trains(model, splits)``."""
    return _assert_trains


def _assert_trains(model, splits, epochs: int = 4, drop: float = 0.5) -> list[float]:
    """Train a few epochs; the validation loss must fall by ``drop`` and every parameter stay finite."""
    result = train(model, splits["train"], splits["val"], TrainConfig(epochs=epochs, batch_size=64, lr=3e-3))
    losses = [h["val_loss"] for h in result.history]
    assert losses[-1] < losses[0] - drop
    assert all(p.isfinite().all() for p in model.parameters())
    return losses
