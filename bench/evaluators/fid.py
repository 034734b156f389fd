"""FID through torch-fidelity: Inception when the user gives its weights (the paper's metric), else the
features of the suite's digit classifier (``fid_suite``, not comparable to the paper's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mrfbench.datasets.classifiers import as_float, load_classifier
from mrfbench.errors import UsageError

SUITE_EXTRACTOR = "mrfbench-digit-features"


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
