"""PolyMNIST (Sutter et al. 2021) built offline, and the 3-modality MNIST of the paper's Appendix D.2.

PolyMNIST, the published procedure: 5 modalities; for each modality and each digit class, a fresh random
permutation of that class's MNIST images decides which image each tuple of that class shows (modalities share
the label, never the instance); each image is binarised (> 128) and pasted onto a uniformly random 28 x 28
crop of the modality's background photo, with the digit pixels colour-inverted. Backgrounds: five RGB photos
scikit-image ships (no download) or image files the user gives.

MNIST-3: tuple t takes MNIST image t as modality 1, a different random image of the same digit as modality 2
(a random derangement within each class), and a uniformly random image of any digit, independent of the
label, as modality 3; 60,000 training tuples (the official train split), 10,000 test tuples.

A build is written once to a cache directory: images as uint8 .npy (memory-mapped on load, (N, M, 3, 28, 28)
for PolyMNIST, (N, 3, 1, 28, 28) for MNIST-3), labels, the recipe (which MNIST image and which crop each
tuple uses) and ``manifest.json`` (seed, sources and their sha256, shapes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrfbench.datasets.mnist import MNIST, sha256_of
from mrfbench.errors import UsageError, check_seed
from mrfbench.runs import atomic_write, write_json

SKIMAGE_BACKGROUNDS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
MANIFEST = "manifest.json"
SPLITS = ("train", "test")


def load_backgrounds(paths: list[str] | None = None) -> tuple[list[np.ndarray], list[dict]]:
    """RGB uint8 backgrounds (H, W, 3) with their provenance: the given image files, else scikit-image's."""
    if paths:
        from PIL import Image

        images, sources = [], []
        for path in paths:
            if not Path(path).exists():
                raise UsageError(f"--backgrounds: {path} does not exist")
            try:
                images.append(np.asarray(Image.open(path).convert("RGB")))
            except (OSError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
                raise UsageError(f"--backgrounds: {path} is not a readable image ({type(err).__name__})") from None
            sources.append({"source": str(path), "sha256": sha256_of(Path(path))})
    else:
        import hashlib

        import skimage.data

        images = [np.asarray(getattr(skimage.data, name)())[..., :3] for name in SKIMAGE_BACKGROUNDS]
        sources = [{"source": f"skimage.data.{name}", "sha256": hashlib.sha256(image.tobytes()).hexdigest()}
                   for name, image in zip(SKIMAGE_BACKGROUNDS, images)]
    small = [s["source"] for s, image in zip(sources, images) if min(image.shape[:2]) < 28]
    if small:
        raise UsageError(f"background(s) smaller than 28 x 28: {', '.join(small)}")
    return images, sources


def within_class_permutation(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An index array that maps each position to a random image of the same label, each image used once."""
    out = np.empty(len(labels), dtype=np.int64)
    for digit in np.unique(labels):  # 10 classes, not samples
        where = np.flatnonzero(labels == digit)
        out[where] = rng.permutation(where)
    return out


@dataclass
class PolyMNISTRecipe:
    indices: np.ndarray  # (N, M) MNIST image of each tuple and modality
    offsets: np.ndarray  # (N, M, 2) top-left corner of each background crop
    labels: np.ndarray  # (N,)


def polymnist_recipe(labels: np.ndarray, backgrounds: list[np.ndarray], rng: np.random.Generator) -> PolyMNISTRecipe:
    n, m = len(labels), len(backgrounds)
    indices = np.stack([within_class_permutation(labels, rng) for _ in range(m)], 1)
    limits = np.array([[b.shape[0] - 28 + 1, b.shape[1] - 28 + 1] for b in backgrounds])  # (M, 2)
    offsets = (rng.random((n, m, 2)) * limits).astype(np.int64)
    return PolyMNISTRecipe(indices, offsets, labels[indices[:, 0]])


def render_polymnist(images: np.ndarray, backgrounds: list[np.ndarray], recipe: PolyMNISTRecipe) -> np.ndarray:
    """uint8 (N, M, 3, 28, 28): each binarised digit on its background crop, digit pixels inverted."""
    grid = np.arange(28)
    out = np.empty((len(recipe.indices), len(backgrounds), 3, 28, 28), dtype=np.uint8)
    for m, background in enumerate(backgrounds):  # modalities, vectorised over tuples
        rows = recipe.offsets[:, m, 0, None, None] + grid[None, :, None]
        cols = recipe.offsets[:, m, 1, None, None] + grid[None, None, :]
        crops = background[rows, cols]  # (N, 28, 28, 3)
        digit = images[recipe.indices[:, m]] > 128
        out[:, m] = np.where(digit[..., None], 255 - crops, crops).transpose(0, 3, 1, 2)
    return out


def mnist3_recipe(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3) MNIST indices: image t, another image of the same digit, a random image of any digit."""
    n = len(labels)
    second = np.empty(n, dtype=np.int64)
    for digit in np.unique(labels):  # a random cyclic shift within each class: a derangement
        where = rng.permutation(np.flatnonzero(labels == digit))
        second[where] = np.roll(where, 1)
    return np.stack([np.arange(n), second, rng.integers(0, n, n)], 1)


def build(kind: str, mnist: MNIST, out: Path, seed: int = 0, background_paths: list[str] | None = None) -> dict:
    """Build PolyMNIST ("polymnist") or MNIST-3 ("mnist3") from ``mnist`` into ``out``; returns the manifest.
    An existing build with the same manifest is kept (a different one needs a fresh directory)."""
    check_seed(seed)
    if out.exists() and not out.is_dir():
        raise UsageError(f"cannot build into {out}: it is a file")
    rng = np.random.default_rng(seed)
    manifest = {"kind": kind, "seed": seed, "mnist": {"source": mnist.source, "sha256": mnist.sha256}}
    if kind == "polymnist":
        backgrounds, sources = load_backgrounds(background_paths)
        manifest["backgrounds"] = sources
    elif kind != "mnist3":
        raise UsageError(f"unknown image data set '{kind}'; valid: polymnist, mnist3")
    existing = out / MANIFEST
    if existing.exists():
        previous = json.loads(existing.read_text())
        if {k: previous.get(k) for k in manifest} == manifest:
            return previous
        raise UsageError(f"{out} holds a different build ({existing}); choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot build into {out}: {err.strerror or err}") from None
    for split in SPLITS:
        images, labels = mnist.split(split)
        if kind == "polymnist":
            recipe = polymnist_recipe(labels, backgrounds, rng)
            tuples, tuple_labels = render_polymnist(images, backgrounds, recipe), recipe.labels
            arrays = {"indices": recipe.indices, "offsets": recipe.offsets}
        else:
            indices = mnist3_recipe(labels, rng)
            tuples, tuple_labels = images[indices][:, :, None], labels[indices]  # (N, 3, 1, 28, 28), (N, 3)
            arrays = {"indices": indices}
        atomic_write(out / f"{split}_images.npy", lambda h, t=tuples: np.save(h, t))
        atomic_write(out / f"{split}_labels.npy", lambda h, y=tuple_labels: np.save(h, y))
        atomic_write(out / f"{split}_recipe.npz", lambda h, a=arrays: np.savez_compressed(h, **a))
        manifest[f"{split}_shape"] = list(tuples.shape)
    write_json(existing, manifest)
    return manifest


def load_build(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (uint8 images, memory-mapped; labels)} of a build directory."""
    if not (Path(directory) / MANIFEST).exists():
        raise UsageError(f"{directory} is not a PolyMNIST / MNIST-3 build (no {MANIFEST}); build it with `mrfbench data`")
    return {split: (np.load(Path(directory) / f"{split}_images.npy", mmap_mode="r"),
                    np.load(Path(directory) / f"{split}_labels.npy")) for split in SPLITS}


def load_polymnist_pngs(directory: Path, n_modalities: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The original PolyMNIST files: ``directory/m0 .. m{M-1}`` of PNGs named ``<index>.<label>.png``, the
    same index meaning the same tuple across modalities; returns uint8 (N, M, 3, 28, 28) and labels (N,)."""
    from PIL import Image

    folders = [Path(directory) / f"m{m}" for m in range(n_modalities)]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise UsageError(f"PolyMNIST folder(s) missing: {', '.join(missing)}")
    names = sorted((p.name for p in folders[0].glob("*.png")), key=lambda s: int(s.split(".")[0]))
    if not names:
        raise UsageError(f"no PNG files named <index>.<label>.png in {folders[0]}")
    for folder in folders[1:]:
        if sorted(p.name for p in folder.glob("*.png")) != sorted(names):
            raise UsageError(f"{folder} does not hold the same <index>.<label>.png files as {folders[0]}")
    images = np.stack([np.stack([np.asarray(Image.open(f / name).convert("RGB")) for f in folders]) for name in names])
    labels = np.array([int(name.split(".")[1]) for name in names], dtype=np.int64)
    return images.transpose(0, 1, 4, 2, 3), labels
