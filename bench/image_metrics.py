"""Image metrics for PolyMNIST / MNIST-3: coherence through digit classifiers the suite trains, FID through
torch-fidelity (Inception when its weights are given, else features of the suite's classifier, reported as
``fid_suite``), and SSIM through torchmetrics. Images are uint8 (N, 3, 28, 28) or float in [0, 1]."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mrfbench.errors import UsageError
from mrfbench.models.latent import nonempty_subsets
from mrfbench.runs import atomic_write, write_json

SUITE_EXTRACTOR = "mrfbench-digit-features"
CLASSIFIERS_DIR = "classifiers"  # in a build directory: m<k>.pt per modality and accuracy.json


class DigitClassifier(nn.Module):
    """The published PolyMNIST classifier: two stride-2 convolutions 3 -> 10 -> 20 with dropout, then
    linear 980 -> 128 -> 10. ``features`` gives the 128-d penultimate layer (the suite's FID features)."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, 10, 3, stride=2, padding=1), nn.ReLU(), nn.Dropout2d(0.1),
            nn.Conv2d(10, 20, 3, stride=2, padding=1), nn.ReLU(), nn.Dropout2d(0.1), nn.Flatten(),
            nn.Linear(980, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(as_float(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def train_classifier(images: np.ndarray, labels: np.ndarray, epochs: int = 6, seed: int = 0,
                     batch_size: int = 128) -> DigitClassifier:
    """Adam on (N, C, 28, 28) images; 6 epochs reach 95.1-97.6% test accuracy on PolyMNIST (3 epochs: 93-96%)."""
    torch.manual_seed(seed)
    model = DigitClassifier(images.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(np.array(images)), torch.from_numpy(np.asarray(labels))
    with torch.enable_grad():  # also when called from an evaluation under no_grad
        for _ in range(epochs):
            model.train()
            for batch in torch.randperm(len(x)).split(batch_size):
                loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return model.eval()


@torch.no_grad()
def predict(classifier: DigitClassifier, images, batch_size: int = 2048) -> torch.Tensor:
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    return torch.cat([classifier(part).argmax(-1) for part in x.split(batch_size)])


def accuracy(classifier: DigitClassifier, images, labels) -> float:
    return float((predict(classifier, images) == torch.as_tensor(np.asarray(labels))).float().mean())


def load_classifier(path: Path) -> DigitClassifier:
    """A classifier saved by ``modality_classifiers`` (its channel count read from the weights)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        classifier = DigitClassifier(state["trunk.0.weight"].shape[1])
        classifier.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise UsageError(f"corrupt classifier {path} ({type(err).__name__}); retrain with --retrain") from None
    return classifier.eval()


def modality_classifiers(build_dir: Path, epochs: int = 6, retrain: bool = False) -> tuple[list[DigitClassifier], list[float]]:
    """One classifier per modality of a build (labels (N,) shared, or (N, M) per modality), trained on the
    train split and cached in ``<build>/classifiers/m<k>.pt`` with the test accuracies in accuracy.json;
    ``retrain`` trains them anew."""
    from mrfbench.datasets.polymnist import load_build

    folder = Path(build_dir) / CLASSIFIERS_DIR
    splits = load_build(build_dir)
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    n_modalities = train_x.shape[1]
    paths = [folder / f"m{m}.pt" for m in range(n_modalities)]
    if all(p.exists() for p in paths) and (folder / "accuracy.json").exists() and not retrain:
        return [load_classifier(p) for p in paths], json.loads((folder / "accuracy.json").read_text())["test_accuracy"]

    def labels_of(y, m):
        return y[:, m] if y.ndim == 2 else y

    classifiers = [train_classifier(train_x[:, m], labels_of(train_y, m), epochs, seed=m) for m in range(n_modalities)]
    accuracies = [accuracy(c, test_x[:, m], labels_of(test_y, m)) for m, c in enumerate(classifiers)]
    folder.mkdir(exist_ok=True)
    for path, classifier in zip(paths, classifiers):
        atomic_write(path, lambda h, c=classifier: torch.save(c.state_dict(), h))
    write_json(folder / "accuracy.json", {"test_accuracy": accuracies, "epochs": epochs})
    return classifiers, accuracies


def conditional_coherence(generate: Callable[[torch.Tensor, list[int]], torch.Tensor], x: torch.Tensor,
                          labels: torch.Tensor, classifiers: list[DigitClassifier],
                          sharing: list[int] | None = None) -> dict:
    """For every non-empty proper subset of observed modalities, ``generate(x, observed)`` -> (N, M, C, H, W)
    generations; coherence is the fraction of generated (unobserved) modalities whose predicted digit is the
    label. Only the modalities in ``sharing`` (default: all) carry the label: a subset is scored when it
    observes one of them, on the unobserved ones among them (MNIST-3: modalities 1 and 2; its third digit is
    independent, so no generation of it can be right or wrong). ``generate`` is called for every subset.
    Returns the mean per subset size ("size_k") and over all scored subsets ("mean")."""
    n_modalities = x.shape[1]
    sharing = list(range(n_modalities)) if sharing is None else sharing
    per_size: dict[int, list[float]] = {}
    for observed in proper_subsets(n_modalities):
        generated = generate(x, observed)
        targets = [m for m in sharing if m not in observed] if set(observed) & set(sharing) else []
        if targets:
            hits = [(predict(classifiers[m], generated[:, m]) == labels).float().mean().item() for m in targets]
            per_size.setdefault(len(observed), []).append(float(np.mean(hits)))
    out = {f"size_{k}": float(np.mean(v)) for k, v in sorted(per_size.items())}
    out["mean"] = float(np.mean([h for v in per_size.values() for h in v]))
    return out


def proper_subsets(n_modalities: int) -> list[list[int]]:
    """The observed sets of conditional generation: every non-empty proper subset, by size."""
    return [[int(i) for i in torch.nonzero(mask).flatten()] for mask in nonempty_subsets(n_modalities)[:-1]]


def unconditional_coherence(samples: torch.Tensor, classifiers: list[DigitClassifier],
                            sharing: list[int] | None = None) -> float:
    """Fraction of joint generations (N, M, C, H, W) whose label-sharing modalities (default: all) are
    predicted as one digit."""
    sharing = list(range(samples.shape[1])) if sharing is None else sharing
    predictions = torch.stack([predict(classifiers[m], samples[:, m]) for m in sharing], 1)
    return float((predictions == predictions[:, :1]).all(1).float().mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM between two image batches (N, C, H, W) (torchmetrics, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(as_float(a), as_float(b), data_range=1.0))


def fid(a, b, inception_weights: Path | None = None, suite_classifier: Path | None = None,
        device: str = "cpu") -> dict[str, float]:
    """FID between two uint8 image sets (N, 3, H, W) through torch-fidelity: ``{"fid": ...}`` with the
    Inception weights the user gives (the paper's metric), else ``{"fid_suite": ...}`` with the 128-d
    features of the suite's digit classifier saved at ``suite_classifier`` (``<build>/classifiers/m<k>.pt``;
    not comparable to the paper's Inception FID)."""
    import torch_fidelity

    if inception_weights is not None and not Path(inception_weights).exists():
        raise UsageError(f"--inception-weights {inception_weights} does not exist")
    if inception_weights is None and (suite_classifier is None or not Path(suite_classifier).exists()):
        raise UsageError("FID needs --inception-weights FILE or a trained suite classifier; neither is available")
    _register_suite_extractor()
    if inception_weights is not None and a.shape[1] == 1:  # grey digits: Inception reads RGB
        a, b = (torch.as_tensor(v).expand(-1, 3, -1, -1) for v in (a, b))
    options = ({"feature_extractor": "inception-v3-compat", "feature_extractor_weights_path": str(inception_weights)}
               if inception_weights is not None else
               {"feature_extractor": SUITE_EXTRACTOR, "feature_layer_fid": "128",
                "feature_extractor_weights_path": str(suite_classifier)})
    result = torch_fidelity.calculate_metrics(
        input1=_ImageSet(a), input2=_ImageSet(b), fid=True, cuda=device.startswith("cuda"), verbose=False,
        cache=False, batch_size=256, save_cpu_ram=True, **options)  # save_cpu_ram: no loader worker processes
    return {"fid" if inception_weights is not None else "fid_suite": float(result["frechet_inception_distance"])}


class _ImageSet(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = torch.as_tensor(np.ascontiguousarray(images))
        if self.images.dtype != torch.uint8:
            self.images = (self.images.clamp(0, 1) * 255).round().to(torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def _register_suite_extractor() -> None:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if SUITE_EXTRACTOR in FEATURE_EXTRACTORS_REGISTRY:
        return

    class SuiteDigitFeatures(FeatureExtractorBase):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.classifier = load_classifier(Path(feature_extractor_weights_path))

        @staticmethod
        def get_provided_features_list():
            return ("128",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "128"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 28, 28, dtype=torch.uint8)

        def forward(self, x):
            if self.classifier.trunk[0].in_channels == 1:  # grey digits given as RGB
                x = as_float(x).mean(1, keepdim=True)
            return (self.classifier.features(x).double(),)

    register_feature_extractor(SUITE_EXTRACTOR, SuiteDigitFeatures)


def to_images(flat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Model outputs (..., M, C * 784) in [0, 1] -> uint8 images (..., M, C, 28, 28)."""
    return (flat.clamp(0, 1) * 255).round().to(torch.uint8).reshape(*flat.shape[:-1], *shape)


@torch.no_grad()
def evaluate_images(model, dataset, test: torch.Tensor, labels: torch.Tensor, n_tuples: int, chunk: int,
                    device: torch.device, inception_weights: str | None = None) -> tuple[dict, torch.Tensor]:
    """Paper Table 1 metrics on the first ``n_tuples`` test tuples, as "unconditional" and "conditional"
    sections: coherence, FID per modality and their mean (``fid_suite``; also the paper's Inception ``fid``
    when ``inception_weights`` is given), SSIM of conditional generations against the true images. A
    modality's conditional FID pools its generations over every subset that leaves it out, each test tuple
    once (tuple i from the (i mod c)-th of those c subsets). Noise floor: the FID between the two halves of
    the real test images; ceiling of coherence: the classifiers' test accuracy. Also returns the uint8
    unconditional generations."""
    model.eval()
    classifiers, accuracies = modality_classifiers(dataset.build_dir)
    sharing = list(dataset.label_sharing or range(dataset.n_modalities))
    shape, n = dataset.modality_shape, min(n_tuples, len(test))
    x, y = test[:n], labels[:n]
    truth = to_images(x, shape)
    samples = torch.cat([to_images(model.sample(min(chunk, n - s)).cpu(), shape) for s in range(0, n, chunk)])
    subsets = proper_subsets(truth.shape[1])
    leaving_out = {m: [i for i, o in enumerate(subsets) if m not in o] for m in range(truth.shape[1])}
    pooled, similarities = torch.empty_like(truth), []

    def generate(data: torch.Tensor, observed: list[int]) -> torch.Tensor:
        parts = [model.conditional_sample(data[s : s + chunk].to(device), observed, 1)[:, 0].cpu()
                 for s in range(0, len(data), chunk)]
        generated = to_images(torch.cat(parts), shape)
        missing = [m for m in range(data.shape[1]) if m not in observed]
        similarities.append(ssim(generated[:, missing].flatten(0, 1), truth[:, missing].flatten(0, 1)))
        for m in missing:
            rows = slice(leaving_out[m].index(subsets.index(observed)), None, len(leaving_out[m]))
            pooled[rows, m] = generated[rows, m]
        return generated

    def fids(generated: torch.Tensor, reference: torch.Tensor) -> dict:
        per = [{**fid(reference[:, m], generated[:, m], suite_classifier=dataset.build_dir / CLASSIFIERS_DIR / f"m{m}.pt"),
                **(fid(reference[:, m], generated[:, m], inception_weights) if inception_weights else {})}
               for m in range(reference.shape[1])]
        out = {}
        for key in per[0]:
            out[key], out[f"{key}_per_modality"] = float(np.mean([p[key] for p in per])), [p[key] for p in per]
        return out

    y_shared = y if y.ndim == 1 else y[:, sharing[0]]
    coherence = conditional_coherence(generate, x, y_shared, classifiers, sharing)
    half = n // 2
    floor = {k: v for k, v in fids(truth[half : 2 * half], truth[:half]).items() if not k.endswith("_per_modality")}
    metrics = {
        "n_tuples": n,
        "label_sharing": sharing,
        "classifier_test_accuracy": [round(a, 4) for a in accuracies],
        "unconditional": {"coherence": unconditional_coherence(samples, classifiers, sharing),
                          **fids(samples, truth), "floor": floor},
        "conditional": {"coherence": coherence["mean"], "coherence_by_size": coherence, **fids(pooled, truth),
                        "ssim": float(np.mean(similarities)), "floor": floor,
                        "ceiling": {"coherence": float(np.mean([accuracies[m] for m in sharing]))}},
    }
    return metrics, samples
