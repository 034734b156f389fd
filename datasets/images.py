"""PolyMNIST and 3-modality MNIST as training data sets, read from a build of `mrfbench data`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrfbench.datasets.polymnist import MANIFEST, load_build
from mrfbench.errors import UsageError


def default_build_dir(kind: str, seed: int) -> Path:
    return Path(os.environ.get("MRFBENCH_CACHE", Path.home() / ".cache" / "mrfbench")) / f"{kind}-seed{seed}"


@dataclass
class ImageConfig:
    build_dir: str | None = None  # default: $MRFBENCH_CACHE or ~/.cache/mrfbench, /<kind>-seed<seed>
    build_seed: int = 0  # the build's seed (pairing and crops), which picks the default build directory
    seed: int = 0  # the run's seed: a build is fixed, so it changes nothing here (kept for a uniform interface)
    n_val: int = 5_000  # held out from the end of the training split
    n_train: int | None = None  # use only the first n training tuples (None: all)
    n_test: int | None = None  # use only the first n test tuples (None: all)


class ImageDataset:
    """Tuples of C x 28 x 28 images in [0, 1], flattened per modality: tensors (N, M, C * 784)."""

    kind = "polymnist"
    label_sharing: tuple[int, ...] | None = None  # modalities that show the tuple's digit (None: all)

    def __init__(self, config: ImageConfig | None = None):
        self.config = config or ImageConfig()
        self.build_dir = (Path(self.config.build_dir) if self.config.build_dir
                          else default_build_dir(self.kind, self.config.build_seed))
        if not (self.build_dir / MANIFEST).exists():
            raise UsageError(f"no {self.kind} build in {self.build_dir}: run `mrfbench data {self.kind} --seed "
                             f"{self.config.build_seed}` (or pass the build directory as build_dir, --data-dir)")
        self._arrays = load_build(self.build_dir)
        images = self._arrays["train"][0]
        self.n_modalities, self.modality_shape = images.shape[1], tuple(images.shape[2:])
        if self.config.n_val < 1 or self.config.n_val >= len(images):
            raise UsageError(f"n val must be in [1, {len(images) - 1}], got {self.config.n_val}")

    def _ranges(self) -> dict[str, tuple[str, slice]]:
        c = self.config
        n = len(self._arrays["train"][0])
        train_end = n - c.n_val if c.n_train is None else min(c.n_train, n - c.n_val)
        return {"train": ("train", slice(0, train_end)), "val": ("train", slice(n - c.n_val, n)),
                "test": ("test", slice(0, c.n_test))}

    def splits(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, (split, rows) in self._ranges().items():
            images = np.asarray(self._arrays[split][0][rows], dtype=np.float32) / 255.0
            out[name] = torch.from_numpy(images.reshape(len(images), self.n_modalities, -1))
        return out

    def labels(self) -> dict[str, torch.Tensor]:
        """Digit labels per split: (N,) shared by the modalities, or (N, M) for MNIST-3."""
        return {name: torch.from_numpy(np.asarray(self._arrays[split][1][rows]))
                for name, (split, rows) in self._ranges().items()}


class PolyMNISTDataset(ImageDataset):
    kind = "polymnist"


class MNIST3Dataset(ImageDataset):
    kind = "mnist3"
    label_sharing = (0, 1)  # the third digit is drawn independently of the label
