import numpy as np
import pytest
import torch

from mrfbench.datasets.classifiers import modality_classifiers, predict
from mrfbench.datasets.mnist import MNIST
from mrfbench.datasets.polymnist import build, load_build
from mrfbench.errors import UsageError
from mrfbench.evaluators.fid import fid
from mrfbench.evaluators.images import conditional_coherence, unconditional_coherence


def easy_mnist(n_train=3000, n_test=300, seed=0) -> MNIST:
    """Digits as bars at a label-dependent height, thick and bright, with noise: easy to classify."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        rows = 2 + 2 * labels[:, None] + np.arange(3)[None]
        images[np.arange(n)[:, None], rows, 4:24] = 255
        return images, labels

    (a, b), (c, d) = make(n_train), make(n_test)
    return MNIST(a, b, c, d, "easy", "0" * 64)


@pytest.fixture(scope="module")
def polymnist(tmp_path_factory):
    """A small PolyMNIST build over the scikit-image backgrounds, with its classifiers."""
    out = tmp_path_factory.mktemp("pm")
    build("polymnist", easy_mnist(), out, seed=0)
    classifiers, accuracies = modality_classifiers(out, epochs=6)
    return out, classifiers, accuracies


def test_classifiers_reach_high_accuracy_and_are_cached(polymnist):
    out, classifiers, accuracies = polymnist
    assert len(classifiers) == 5 and min(accuracies) >= 0.95, accuracies
    cached, cached_acc = modality_classifiers(out)
    assert cached_acc == accuracies
    x = torch.from_numpy(np.ascontiguousarray(load_build(out)["test"][0][:50, 2]))
    assert torch.equal(predict(cached[2], x), predict(classifiers[2], x))
    (out / "classifiers" / "m1.pt").write_bytes(b"broken")
    with pytest.raises(UsageError, match="corrupt classifier"):
        modality_classifiers(out)
    modality_classifiers(out, epochs=1, retrain=True)  # retrained on demand, cache repaired


def test_coherence_is_one_for_an_oracle_and_near_chance_for_noise(polymnist):
    out, classifiers, _ = polymnist
    images, labels = load_build(out)["test"]
    x, y = torch.from_numpy(np.array(images)), torch.from_numpy(labels)
    oracle = conditional_coherence(lambda data, observed: data, x, y, classifiers)
    assert set(oracle) == {"size_1", "size_2", "size_3", "size_4", "mean"}
    assert oracle["mean"] > 0.95
    g = torch.Generator().manual_seed(0)
    noise = conditional_coherence(lambda data, observed: torch.randint(0, 256, data.shape, generator=g, dtype=torch.uint8),
                                  x, y, classifiers)
    assert noise["mean"] < 0.3
    assert unconditional_coherence(x, classifiers) > 0.9
    shuffled = x[:, :, :, :, :].clone()
    shuffled[:, 1] = x[torch.randperm(len(x), generator=g), 1]
    assert unconditional_coherence(shuffled, classifiers) < 0.3


def test_fid_of_a_set_against_itself_is_zero_and_grows_for_other_images(polymnist):
    out, _, _ = polymnist
    images, _ = load_build(out)["test"]
    real = np.ascontiguousarray(images[:, 0])
    weights = out / "classifiers" / "m0.pt"
    same = fid(real, real, suite_classifier=weights)
    noise = np.random.default_rng(0).integers(0, 256, real.shape).astype(np.uint8)
    other = fid(real, noise, suite_classifier=weights)
    assert set(same) == {"fid_suite"} and abs(same["fid_suite"]) < 1e-3
    assert other["fid_suite"] > 1.0
    with pytest.raises(UsageError, match="inception-weights"):
        fid(real, real, inception_weights=out / "absent.pth")


class OracleModel:
    """Stands in for a perfect model: conditional generations are the true tuples, prior samples are test
    tuples in a shuffled order."""

    def __init__(self, test: torch.Tensor):
        self.test = test

    def eval(self):
        return self

    def sample(self, n: int, diagnostics: dict | None = None) -> torch.Tensor:
        return self.test[torch.randperm(len(self.test))[:n]]

    def conditional_sample(self, x: torch.Tensor, observed: list[int], n_per: int,
                           diagnostics: dict | None = None) -> torch.Tensor:
        return x[:, None].expand(-1, n_per, -1, -1)


def test_an_oracle_model_scores_its_ceiling_and_floor(polymnist):
    """Every metric section on a perfect generator: coherence at the classifiers' accuracy, conditional FID 0
    (so the pooled conditional generations cover every test tuple), SSIM 1, unconditional FID near the floor."""
    from mrfbench.datasets.images import ImageConfig, PolyMNISTDataset
    from mrfbench.evaluators.images import evaluate_images

    out, _, _ = polymnist
    dataset = PolyMNISTDataset(ImageConfig(build_dir=str(out), n_val=100))
    test, labels = dataset.splits()["test"], dataset.labels()["test"]
    metrics, samples = evaluate_images(OracleModel(test), dataset, test, labels, 200, 64, torch.device("cpu"))
    uncond, cond = metrics["unconditional"], metrics["conditional"]
    assert metrics["n_tuples"] == 200 and samples.shape == (200, 5, 3, 28, 28)
    assert cond["coherence"] == pytest.approx(cond["ceiling"]["coherence"], abs=0.03)
    assert set(cond["coherence_by_size"]) == {"size_1", "size_2", "size_3", "size_4", "mean"}
    assert abs(cond["fid_suite"]) < 1e-3 and len(cond["fid_suite_per_modality"]) == 5
    assert cond["ssim"] == pytest.approx(1.0)
    assert uncond["coherence"] >= np.prod(metrics["classifier_test_accuracy"]) - 0.05  # all classifiers right
    assert uncond["fid_suite"] < 3 * uncond["floor"]["fid_suite"] + 1e-3


def test_mnist3_coherence_scores_only_the_label_sharing_modalities(tmp_path):
    """The third MNIST-3 digit is independent of the label: the truth is coherent on modalities 1 and 2, and
    counting the third would call it incoherent."""
    build("mnist3", easy_mnist(n_train=1500), tmp_path, seed=0)
    classifiers, _ = modality_classifiers(tmp_path, epochs=3)
    images, labels = load_build(tmp_path)["test"]
    x, y = torch.from_numpy(np.array(images)), torch.from_numpy(labels)
    oracle = conditional_coherence(lambda data, observed: data, x, y[:, 0], classifiers, sharing=[0, 1])
    assert set(oracle) == {"size_1", "size_2", "mean"} and oracle["mean"] > 0.95
    assert conditional_coherence(lambda data, observed: data, x, y[:, 0], classifiers)["mean"] < 0.8
    assert unconditional_coherence(x, classifiers, sharing=[0, 1]) > 0.9
    assert unconditional_coherence(x, classifiers) < 0.3


def test_a_learning_curve_point_holds_every_figure_of_the_table_fid_suite_standing_for_fid(polymnist):
    from mrfbench.curve import curve_point
    from mrfbench.datasets import get_benchmark
    from mrfbench.evaluate import EvalConfig
    from mrfbench.models import build_model

    spec = get_benchmark("polymnist")
    dataset = spec.make(build_dir=str(polymnist[0]), n_val=50, n_test=40)
    model = build_model("gmrf", n_modalities=5, modality_dim=3 * 784, architecture="mlp", hidden=32, mlp_layers=2)
    point = curve_point(model, spec, dataset, dataset.splits()["test"], "test", EvalConfig(n_image_tuples=40),
                        torch.device("cpu"))
    assert set(point) == {f"curve/{s}/{m}" for s in ("unconditional", "conditional") for m in ("fid_suite", "coherence")} \
        | {"curve/conditional/ssim"}
