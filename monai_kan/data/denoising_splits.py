"""The splits of the KAE denoising bundle (``bundles/kae_denoising``): which files it trains, validates and tests on.

* :func:`prepare_denoising_data`: the dataset folder (a given one, or the embedded synthetic / MNI152 set, generated
  by :mod:`monai_kan.data.synthetic_slices` / :mod:`monai_kan.data.mni152`).
* :func:`denoising_datalist`: the clean images of a split (train / validation from ``training``, ``test``).
* :func:`noisy_pairs`: validation and test inputs are noisy copies written once to disk with a fixed seed per file
  (:func:`~monai_kan.data.transforms.add_noise`), so every evaluation of a split sees the same noise and inference
  reads ordinary noisy image files.
* :func:`image_files`: the images of a folder (the bundle's inference input).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from monai.transforms import LoadImage, SaveImage

from monai_kan.data.mni152 import make_mni152_dataset
from monai_kan.data.msd import DatasetError, DatasetNotFoundError, read_datalist
from monai_kan.data.synthetic_slices import make_synthetic_dataset
from monai_kan.data.transforms import add_noise, load_slice

__all__ = ["IMAGE_EXTENSIONS", "denoising_datalist", "image_files", "noisy_pairs", "prepare_denoising_data"]

PathLike = Union[str, os.PathLike]

#: file endings :func:`image_files` lists (what MONAI's ``LoadImage`` reads with nibabel, ITK or PIL)
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def prepare_denoising_data(
    dataset_dir: Optional[PathLike] = None,
    data_source: str = "synthetic",
    cache_dir: PathLike = "data",
    num_train: int = 64,
    num_test: int = 16,
    seed: int = 0,
    mni152_template: Optional[PathLike] = None,
) -> str:
    """The dataset folder the bundle reads: ``dataset_dir`` if given, else the embedded ``data_source``, generated.

    Args:
        dataset_dir: a folder with ``dataset.json`` (Decathlon style: ``training`` entries ``{"image": path}``,
            ``test`` paths; paths relative to the folder) of 2D images. Empty or None: use ``data_source``.
        data_source: ``"synthetic"`` (default, offline) or ``"mni152"`` (needs the template, see
            :func:`find_mni152_template`), written under ``cache_dir/<data_source>``.
        cache_dir: where embedded data sets are written. Defaults to ``data``.
        num_train: synthetic training slices. Defaults to 64.
        num_test: synthetic test slices. Defaults to 16.
        seed: synthetic generator seed. Defaults to 0.
        mni152_template: path to the MNI152 template file (optional, see :func:`find_mni152_template`).

    Returns:
        absolute path of the dataset folder.
    """
    if dataset_dir:
        root = Path(dataset_dir).expanduser().resolve()
        if not (root / "dataset.json").is_file():
            raise DatasetNotFoundError(
                f"dataset_dir '{root}' has no dataset.json; expected a Decathlon-style folder "
                "(dataset.json with 'training' and 'test' lists of 2D images)."
            )
        return str(root)
    if data_source == "synthetic":
        return str(make_synthetic_dataset(Path(cache_dir) / "synthetic", num_train, num_test, seed).resolve())
    if data_source == "mni152":
        return str(make_mni152_dataset(Path(cache_dir) / "mni152", mni152_template).resolve())
    raise ValueError(f"`data_source` must be 'synthetic' or 'mni152' (or give dataset_dir), got {data_source!r}.")


def denoising_datalist(data_root: PathLike, split: str, num_val: Union[int, float] = 0.2) -> List[Dict[str, str]]:
    """Clean image files of one split as ``[{"image": absolute_path}, ...]``.

    ``"train"`` and ``"validation"`` divide the ``training`` list of ``dataset.json`` (validation = its last
    ``num_val`` entries, or that fraction of them, at least one); ``"test"`` is the ``test`` list, never used for
    training or checkpoint selection.

    Args:
        data_root: folder holding ``dataset.json``.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        num_val: validation size, a count (int) or a fraction of the training list (float). Defaults to 0.2.

    Raises:
        FileNotFoundError: ``dataset.json`` or a listed image is missing (the message names it).
        ValueError: unknown split, malformed entries, or an empty split (:class:`~monai_kan.data.msd.DatasetError`
            where ``dataset.json`` itself is at fault; :func:`~monai_kan.data.msd.read_datalist` reads it).
    """
    root = Path(data_root)
    key = {"train": "training", "validation": "training", "test": "test"}.get(split)
    if key is None:
        raise ValueError(f"`split` must be 'train', 'validation' or 'test', got {split!r}.")
    entries = read_datalist(root, key, allow_empty=True)
    paths = [str(Path(entry["image"]).resolve()) for entry in entries]
    if key == "training":
        n_val = int(num_val) if isinstance(num_val, int) else int(np.ceil(float(num_val) * len(paths)))
        n_val = min(max(n_val, 1), max(len(paths) - 1, 0))
        paths = paths[len(paths) - n_val :] if split == "validation" else paths[: len(paths) - n_val]
    if not paths:
        raise DatasetError(f"split '{split}' of '{root / 'dataset.json'}' is empty ('{key}' lists {len(entries)}).")
    for path in paths:
        if not os.path.isfile(path):
            raise DatasetNotFoundError(f"image file not found: '{path}' (listed in '{root / 'dataset.json'}').")
    return [{"image": p} for p in paths]


def noisy_pairs(
    clean: Sequence[Union[Mapping[str, str], str]],
    out_dir: PathLike,
    noise_std: float = 0.1,
    salt_pepper: float = 0.05,
    seed: int = 0,
    a_min: float = 0.0,
    a_max: float = 1.0,
    split: str = "test",
) -> List[Dict[str, str]]:
    """Fixed noisy copies of clean images: ``[{"image": noisy_path, "label": clean_path}, ...]``.

    Each noisy file is ``add_noise(clean, noise_std, salt_pepper, seed + crc32(file name))``, written once as NIfTI
    with the clean image's geometry under ``out_dir/<split>_<tag>/`` (the tag encodes the noise, the seed, the
    window and the clean folders) and reused afterwards, so repeated evaluations see identical inputs. That folder
    holds exactly the noisy images of this split (the default input folder of the bundle's inference).

    Args:
        clean: clean image paths, or dicts with an ``"image"`` path (as :func:`denoising_datalist` returns).
        out_dir: folder for the noisy files.
        noise_std: Gaussian standard deviation, as a fraction of ``a_max - a_min``. Defaults to 0.1.
        salt_pepper: salt-and-pepper ``amount``: total fraction of changed pixels, half salt and half pepper
            (:func:`~monai_kan.data.transforms.salt_and_pepper_noise`). Defaults to 0.05 (2.5 % salt plus 2.5 % pepper).
        seed: base seed. Defaults to 0.
        a_min: intensity the bundle maps to 0. Defaults to 0.
        a_max: intensity the bundle maps to 1. Defaults to 1.
        split: name of the split, first part of the folder name. Defaults to ``"test"``.
    """
    paths = [c["image"] if isinstance(c, Mapping) else c for c in clean]
    if not paths:
        raise ValueError("`clean` is empty: no images to corrupt.")
    folders = sorted({str(Path(p).resolve().parent) for p in paths})
    digest = hashlib.sha1("|".join(folders).encode()).hexdigest()[:8]
    tag = f"{split}_gauss{noise_std:g}_sp{salt_pepper:g}_seed{seed}_win{a_min:g}-{a_max:g}_{digest}"
    target = Path(out_dir) / tag
    target.mkdir(parents=True, exist_ok=True)
    loader = LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)
    pairs = []
    for path in paths:
        name = Path(path).name
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
        noisy_path = target / f"{stem}_noisy.nii.gz"
        if not noisy_path.is_file():
            image = load_slice(path, loader)
            noisy = add_noise(image.as_tensor(), noise_std, salt_pepper, seed + zlib.crc32(name.encode()) % 2**31,
                              a_min, a_max)
            image = image.clone()
            image.array = noisy  # keep the clean file's metadata (affine, spacing)
            with tempfile.TemporaryDirectory(dir=target) as tmp:  # write, then rename: no half-written file
                SaveImage(output_dir=tmp, output_postfix="noisy", output_ext=".nii.gz", separate_folder=False,
                          resample=False, print_log=False)(image)
                os.replace(Path(tmp) / noisy_path.name, noisy_path)
        pairs.append({"image": str(noisy_path.resolve()), "label": str(Path(path).resolve())})
    return pairs


def image_files(input_dir: PathLike) -> List[Dict[str, str]]:
    """Image files directly inside ``input_dir`` (sorted, endings in :data:`IMAGE_EXTENSIONS`) as ``[{"image": path}]``.

    Raises:
        FileNotFoundError: ``input_dir`` is not a folder.
        ValueError: it holds no image file.
    """
    folder = Path(input_dir)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"input folder not found: '{folder}' (expected a folder of 2D images).")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DatasetError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in '{folder}'.")
    return [{"image": str(p.resolve())} for p in files]
