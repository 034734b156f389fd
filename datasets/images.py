"""PolyMNIST and 3-modality MNIST as training data sets, read from a build of `mrfbench data`."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrfbench.datasets.polymnist import MANIFEST, build, load_build
from mrfbench.datasets.spec import Benchmark, register_benchmark
from mrfbench.errors import UsageError, bounded, check_fields


def default_build_dir(kind: str, seed: int) -> Path:
    return Path(os.environ.get("MRFBENCH_CACHE", Path.home() / ".cache" / "mrfbench")) / f"{kind}-seed{seed}"


@dataclass
class ImageConfig:
    build_dir: str | None = None  # default: $MRFBENCH_CACHE or ~/.cache/mrfbench, /<kind>-seed<seed>
    build_seed: int = 0  # the build's seed (pairing and crops), which picks the default build directory
    seed: int = 0  # the run's seed: a build is fixed, so it changes nothing here (kept for a uniform interface)
    n_val: int = bounded(5_000, ge=1)  # held out from the end of the training split
    n_train: int | None = bounded(None, ge=1)  # use only the first n training tuples (None: all)
    n_test: int | None = bounded(None, ge=1)  # use only the first n test tuples (None: all)

    def __post_init__(self):
        check_fields(self)


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
    budgets = ("quick", "cpu", "paper")  # `mrfbench reproduce polymnist --budget B` runs search_spaces/polymnist_B.yaml


class MNIST3Dataset(ImageDataset):
    kind = "mnist3"
    label_sharing = (0, 1)  # the third digit is drawn independently of the label
    budgets = ("quick", "cpu", "curve", "paper")


def prepare(kind: str, data_dir: Path | None, mnist: str | None, status=contextlib.nullcontext) -> dict:
    """The dataset options of a sweep's trials: the build they read, made first if absent, with its digit
    classifiers trained once here (trials running side by side must not each train them). ``status(text)``
    is a context manager that shows what is going on."""
    from mrfbench.datasets.classifiers import modality_classifiers
    from mrfbench.datasets.mnist import load_mnist

    build_dir = Path(data_dir) if data_dir is not None else default_build_dir(kind, 0)
    if not (build_dir / MANIFEST).exists():
        if data_dir is not None:
            raise UsageError(f"--data-dir {data_dir} holds no build ({MANIFEST} missing): run `mrfbench data {kind} "
                             f"--out {data_dir}` or leave --data-dir out to use the cache")
        with status(f"building {kind} in {build_dir}"):
            build(kind, load_mnist(mnist), build_dir, 0)
    with status(f"digit classifiers for {build_dir} (trained once, then cached)"):
        modality_classifiers(build_dir)
    return {"build_dir": str(build_dir.resolve())}


def _builder(kind: str):
    def build_data(out: Path | None, seed: int, mnist: str | None = None, backgrounds: list[str] | None = None) -> dict:
        """Build the data set offline into ``out`` (default: the cache); its manifest and ``build_dir``."""
        from mrfbench.datasets.mnist import load_mnist

        out = out or default_build_dir(kind, seed)
        return {**build(kind, load_mnist(mnist), out, seed, backgrounds), "build_dir": str(out)}

    return build_data


IMAGE_NOTES = ("Coherence and SSIM higher, FID lower is better. FID marked * is fid_suite: the FID on the features "
               "of the suite's digit classifiers, not the Inception FID of the paper (whose figure stands beside it "
               "for reference only; no difference is taken). Floor: the FID between two halves of the real test "
               "images; ceiling: the classifiers' test accuracy.")

for _cls, _description, _table, _notes in (
    (PolyMNISTDataset, "5 modalities of 3x28x28 digits on photo backgrounds (Sutter et al. 2021); "
                       "`mrfbench data polymnist`", "Table 1", ""),
    (MNIST3Dataset, "3 modalities of 28x28 digits: two of the label, one random (paper App. D.2); `mrfbench data mnist3`",
     "Table 4", " MNIST-3 coherence counts modalities 1 and 2 (the third digit is random)."),
):
    register_benchmark(Benchmark(
        name=_cls.kind, description=_description, dataset=_cls, config=ImageConfig, architecture="conv",
        table=_table, notes=IMAGE_NOTES + _notes,
        budgets={budget: f"{_cls.kind}_{budget}" for budget in _cls.budgets},
        default_space=f"{_cls.kind}_paper", prepare=functools.partial(prepare, _cls.kind), build=_builder(_cls.kind)))
