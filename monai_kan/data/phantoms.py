"""Deterministic synthetic organ-with-lesion phantoms written in the Medical Segmentation Decathlon (MSD) layout.

Every case is a CT-like volume (or slice) in Hounsfield-like units: air, a body with fat texture, a few distractor
structures (bone-like and soft-tissue blobs), one organ (an ellipsoid with a randomly rotated frame whose surface is
perturbed by smooth noise, with an internal texture), and a lesion inside the organ (hypo- or hyper-dense, also a
perturbed ellipsoid). The image is blurred (partial volume) and gets Gaussian noise. Labels: 0 background, 1 organ,
2 lesion ("tumor").

The files follow the MSD layout, so the bundles read them exactly as they would read ``Task03_Liver``::

    <root>/dataset.json                 name, labels, modality, "training" and "test" lists
    <root>/imagesTr/phantom_000.nii.gz  training images (the bundles split them into train and validation)
    <root>/labelsTr/phantom_000.nii.gz
    <root>/imagesTs/phantom_100.nii.gz  held-out test images
    <root>/labelsTs/phantom_100.nii.gz  their labels (MSD test sets have none; ours do, for evaluation)

Case ``i`` depends only on ``(seed, i)``: the same arguments always give the same files (bit for bit).

Example::

    from monai_kan.data.phantoms import ensure_phantom_dataset
    ensure_phantom_dataset("data/phantom3d", spatial_dims=3)   # writes once, then reuses
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from monai_kan.utils import check_int
from monai_kan.data.msd import DatasetNotFoundError, read_dataset_json
from monai_kan.data.msd_writer import new_msd_folder, save_nifti

__all__ = [
    "PHANTOM_LABELS",
    "default_phantom_params",
    "ensure_phantom_dataset",
    "make_phantom",
    "prepare_phantom_dataset",
    "write_phantom_dataset",
]

PHANTOM_LABELS = {"0": "background", "1": "organ", "2": "tumor"}

_GENERATOR = "monai_kan.data.phantoms"
_FORMAT_VERSION = 1


def default_phantom_params(spatial_dims: int) -> Dict[str, Any]:
    """Default generator settings of the segmentation bundles (also the defaults of :func:`write_phantom_dataset`).

    Args:
        spatial_dims: 2 or 3.

    Returns:
        dict with ``num_train``, ``num_test``, ``shape_range`` (min and max size of every axis, in voxels),
        ``spacing`` (mm) and ``seed``.
    """
    if spatial_dims == 3:
        return {"num_train": 30, "num_test": 10, "shape_range": [72, 88], "spacing": 1.0, "seed": 0}
    if spatial_dims == 2:
        return {"num_train": 60, "num_test": 20, "shape_range": [112, 144], "spacing": 1.0, "seed": 0}
    raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}.")


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-smoothed white noise."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _random_rotation(rng: np.random.Generator, dims: int) -> np.ndarray:
    """Uniformly random rotation matrix (QR of a Gaussian matrix with the sign fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dims, dims)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _blob(
    rng: np.random.Generator,
    coords: np.ndarray,
    centre: np.ndarray,
    radii: np.ndarray,
    roughness: float,
    noise_sigma: float,
) -> np.ndarray:
    """Mask of a randomly rotated ellipsoid (ellipse in 2D) whose surface is perturbed by smooth noise.

    Args:
        rng: random generator.
        coords: ``(dims, *shape)`` voxel coordinates.
        centre: ``(dims,)`` centre in voxels.
        radii: ``(dims,)`` semi-axes in voxels.
        roughness: relative amplitude of the surface perturbation (0 gives a smooth ellipsoid).
        noise_sigma: spatial correlation (voxels) of the perturbation.
    """
    dims = coords.shape[0]
    shape = coords.shape[1:]
    rot = _random_rotation(rng, dims)
    # work in the bounding box of the (perturbed) ellipsoid only
    reach = float(radii.max()) * (1.0 + 4.0 * roughness) + 2.0
    box = tuple(
        slice(max(0, int(np.floor(c - reach))), min(s, int(np.ceil(c + reach)) + 1)) for c, s in zip(centre, shape)
    )
    mask = np.zeros(shape, dtype=bool)
    sub = coords[(slice(None),) + box]
    if sub.size == 0:
        return mask
    offset = sub - centre.reshape((dims,) + (1,) * dims)
    local = np.tensordot(rot.T, offset, axes=1) / radii.reshape((dims,) + (1,) * dims)
    dist = np.sqrt(np.square(local).sum(0))
    if roughness > 0:
        dist = dist + roughness * _smooth_noise(rng, dist.shape, noise_sigma)
    mask[box] = dist < 1.0
    return mask


def make_phantom(
    shape: Sequence[int], rng: np.random.Generator, spacing: float = 1.0
) -> Tuple[np.ndarray, np.ndarray]:
    """One organ-with-lesion phantom.

    Args:
        shape: spatial shape (2 or 3 values, each >= 32).
        rng: random generator (all randomness of the case comes from it).
        spacing: voxel size in mm; sizes of the structures are set in mm, so a finer spacing gives the same anatomy
            on more voxels.

    Returns:
        ``(image, label)``: float32 image in Hounsfield-like units and uint8 label (0 background, 1 organ, 2 tumor),
        both of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    dims = len(shape)
    if dims not in (2, 3) or min(shape) < 32:
        raise ValueError(f"`shape` must have 2 or 3 sizes, each >= 32, got {shape}.")
    if spacing <= 0:
        raise ValueError(f"`spacing` must be positive, got {spacing!r}.")
    size = np.asarray(shape, dtype=np.float32)
    mm = 1.0 / spacing  # voxels per mm
    coords = np.indices(shape, dtype=np.float32)
    centre = (size - 1) / 2

    # body: a large ellipsoid filling most of the field of view, soft tissue with fat texture; air outside
    body = _blob(rng, coords, centre, size * rng.uniform(0.44, 0.49, dims), 0.03, 8 * mm)
    fat = _smooth_noise(rng, shape, 3 * mm) > 0.6
    image = np.full(shape, -1000.0, dtype=np.float32)
    image[body] = rng.uniform(20, 45)
    image[body & fat] = rng.uniform(-110, -70)

    # organ: perturbed ellipsoid near the centre, radii 22-32 mm (2D: 24-34 mm)
    radii = rng.uniform(22, 32, dims) * mm if dims == 3 else rng.uniform(24, 34, dims) * mm
    organ_centre = centre + rng.uniform(-0.08, 0.08, dims) * size
    organ = _blob(rng, coords, organ_centre, radii, rng.uniform(0.05, 0.12), 6 * mm) & body

    # distractors outside the organ: one bone-like (bright) and one soft-tissue blob close to the organ's intensity
    organ_mean = rng.uniform(90, 130)
    for value in (rng.uniform(250, 400), organ_mean - rng.uniform(35, 50)):
        for _ in range(20):  # find a place that does not touch the organ
            c = centre + rng.uniform(-0.32, 0.32, dims) * size
            blob = _blob(rng, coords, c, rng.uniform(5, 11, dims) * mm, 0.08, 3 * mm) & body
            if not (ndimage.binary_dilation(blob, iterations=2) & organ).any():
                image[blob] = value
                break

    # organ texture: smooth fluctuations around the organ's mean
    image[organ] = organ_mean + 12.0 * _smooth_noise(rng, shape, 2.5 * mm)[organ]

    # lesion: inside the organ, at least 3 mm from its surface; radii 9-15 mm; hypo- or hyper-dense
    depth = ndimage.distance_transform_edt(organ)
    lesion = np.zeros(shape, dtype=bool)
    for _ in range(50):
        lesion_radii = rng.uniform(9, 15, dims) * mm
        inside = np.argwhere(depth > lesion_radii.max() + 3 * mm)
        if len(inside) == 0:
            continue
        c = inside[rng.integers(len(inside))].astype(np.float32)
        lesion = _blob(rng, coords, c, lesion_radii, rng.uniform(0.04, 0.10), 3 * mm) & organ
        if lesion.sum() > 0.3 * np.prod(lesion_radii) * (4.19 if dims == 3 else 3.14):
            break
    if not lesion.any():  # cannot happen with the radii above; a loud failure is better than a lesion-free case
        raise RuntimeError(f"could not place a lesion in an organ of {int(organ.sum())} voxels (shape {shape}).")
    contrast = rng.uniform(45, 70) * rng.choice([-1.0, 1.0])
    image[lesion] = organ_mean + contrast + 8.0 * _smooth_noise(rng, shape, 1.5 * mm)[lesion]

    # acquisition: partial-volume blur and noise
    image = ndimage.gaussian_filter(image, 0.6 * mm)
    image = image + rng.uniform(8, 18) * rng.standard_normal(shape).astype(np.float32)

    label = np.zeros(shape, dtype=np.uint8)
    label[organ] = 1
    label[lesion] = 2
    return image.astype(np.float32), label


def _save_nifti(array: np.ndarray, spacing: float, path: str) -> None:
    affine = np.diag([spacing] * array.ndim + [1.0])
    if array.ndim == 2:  # nibabel wants a 3D/4D affine even for 2D images
        affine = np.diag([spacing, spacing, 1.0, 1.0])
    save_nifti(path, array, affine, xyz_mm=True)


def write_phantom_dataset(
    root: str,
    spatial_dims: int = 3,
    num_train: Optional[int] = None,
    num_test: Optional[int] = None,
    shape_range: Optional[Sequence[int]] = None,
    spacing: Optional[float] = None,
    seed: Optional[int] = None,
) -> str:
    """Write a phantom set in the MSD layout into ``root`` (which must not exist or be an empty folder; else
    :class:`~monai_kan.data.msd_writer.FolderExistsError`, a ``ValueError``).

    The files are first written to a temporary sibling folder, which is then renamed to ``root``
    (:func:`~monai_kan.data.msd_writer.new_msd_folder`): an interrupted run leaves no half-written dataset behind,
    and concurrent writers (e.g. the ranks of a distributed run) cannot mix their files.

    Args:
        root: output folder.
        spatial_dims: 2 (slices) or 3 (volumes).
        num_train: number of cases in the ``training`` list. Defaults to :func:`default_phantom_params`.
        num_test: number of held-out cases in the ``test`` list (with labels in ``labelsTs``). Defaults likewise.
        shape_range: ``[min, max]`` size of every axis, in voxels, drawn per case. Defaults likewise.
        spacing: voxel size in mm. Defaults likewise.
        seed: generator seed. Defaults likewise (0).

    Returns:
        the path of the written ``dataset.json``.
    """
    params = default_phantom_params(spatial_dims)
    given = {"num_train": num_train, "num_test": num_test, "shape_range": shape_range, "spacing": spacing,
             "seed": seed}
    params.update({k: v for k, v in given.items() if v is not None})
    params["shape_range"] = [int(v) for v in params["shape_range"]]
    check_int("num_train", params["num_train"])
    check_int("num_test", params["num_test"], minimum=0)
    lo, hi = params["shape_range"] if len(params["shape_range"]) == 2 else (0, 0)
    if len(params["shape_range"]) != 2 or lo < 32 or hi < lo:
        raise ValueError(f"`shape_range` must be [min, max] with 32 <= min <= max, got {params['shape_range']}.")
    root = os.path.abspath(root)
    # another writer (a distributed rank) finishing first is fine: its files are the same, they are kept
    with new_msd_folder(root, keep_concurrent=True) as tmp:
        training, test = [], []
        for index in range(params["num_train"] + params["num_test"]):
            rng = np.random.default_rng([int(params["seed"]), index])
            shape = rng.integers(lo, hi + 1, size=spatial_dims)
            image, label = make_phantom(shape, rng, float(params["spacing"]))
            name = f"phantom_{index:03d}.nii.gz"
            split = "Tr" if index < params["num_train"] else "Ts"
            _save_nifti(image, float(params["spacing"]), os.path.join(tmp, f"images{split}", name))
            _save_nifti(label, float(params["spacing"]), os.path.join(tmp, f"labels{split}", name))
            item = {"image": f"./images{split}/{name}", "label": f"./labels{split}/{name}"}
            (training if split == "Tr" else test).append(item)
        meta = {
            "name": f"phantom{spatial_dims}d",
            "description": "Synthetic CT-like organ-with-lesion phantoms (monai_kan.data.phantoms).",
            "tensorImageSize": f"{spatial_dims}D",
            "reference": "generated",
            "licence": "generated by monai-kan (Apache-2.0); no third-party data",
            "release": f"monai-kan phantom format {_FORMAT_VERSION}",
            "modality": {"0": "CT"},
            "labels": dict(PHANTOM_LABELS),
            "numTraining": len(training),
            "numTest": len(test),
            "training": training,
            "test": test,
            "generator": {"module": _GENERATOR, "version": _FORMAT_VERSION, "spatial_dims": spatial_dims, **params},
        }
        with open(os.path.join(tmp, "dataset.json"), "w") as f:
            json.dump(meta, f, indent=2)
    return os.path.join(root, "dataset.json")


def ensure_phantom_dataset(root: str, spatial_dims: int = 3, **params: Any) -> str:
    """Write the phantom set into ``root`` unless it is already there (then check that it is the same set).

    The bundles call this on their default ``dataset_dir``, so a fresh machine trains with no download.

    Args:
        root: dataset folder.
        spatial_dims: 2 or 3.
        params: ``num_train``, ``num_test``, ``shape_range``, ``spacing``, ``seed`` (see
            :func:`write_phantom_dataset`); ``None`` values take the defaults.

    Returns:
        the path of ``dataset.json``.

    Raises:
        ValueError: ``root`` holds other data, or a phantom set written with other settings (delete the folder or
            choose another one).
    """
    path = os.path.join(root, "dataset.json")
    if not os.path.isfile(path):
        return write_phantom_dataset(root, spatial_dims, **params)
    found = read_dataset_json(root).get("generator", {})  # DatasetError (a ValueError) names an unreadable file
    wanted = default_phantom_params(spatial_dims)
    wanted.update({k: v for k, v in params.items() if v is not None})
    wanted["shape_range"] = [int(v) for v in wanted["shape_range"]]
    wanted.update({"module": _GENERATOR, "version": _FORMAT_VERSION, "spatial_dims": spatial_dims})
    differs = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
    if differs:
        raise ValueError(
            f"{root} already holds a dataset that differs from the requested phantom set "
            f"(setting: (found, requested)) {differs}; delete the folder or choose another `dataset_dir`."
        )
    return path


def prepare_phantom_dataset(
    dataset_dir: str, default_dataset_dir: str, spatial_dims: int = 3, **params: Any
) -> str:
    """The data preparation step of the segmentation bundles (``"prepare_data"`` in their ``train.json`` and
    ``inference.json``): generate the phantoms for the default folder, check a user's folder.

    * ``dataset_dir`` is ``default_dataset_dir`` (no ``--dataset_dir`` given): the phantom set is written there on
      first use and reused afterwards (:func:`ensure_phantom_dataset`).
    * any other folder is the user's data: nothing is written; it must exist and hold ``dataset.json`` (MSD layout).

    Args:
        dataset_dir: the dataset folder of the run (``@dataset_dir``).
        default_dataset_dir: the bundle's own phantom folder (``@default_dataset_dir``).
        spatial_dims: 2 or 3.
        params: phantom settings (``num_train``, ``num_test``, ``shape_range``, ``spacing``, ``seed``; see
            :func:`write_phantom_dataset`), used for the default folder only.

    Returns:
        the path of ``dataset.json``.

    Raises:
        DatasetNotFoundError: a user folder that does not exist or has no ``dataset.json`` (a ``FileNotFoundError``
            and a :class:`~monai_kan.data.msd.DatasetError`); the message names it and says how to get data.
        ValueError: the default folder holds other data (see :func:`ensure_phantom_dataset`).
    """
    if os.path.abspath(dataset_dir) == os.path.abspath(default_dataset_dir):
        return ensure_phantom_dataset(dataset_dir, spatial_dims, **params)
    how = (
        "pass a folder in the Medical Segmentation Decathlon layout (dataset.json with a 'training' list, imagesTr/, "
        "labelsTr/), e.g. a downloaded MSD task such as Task03_Liver or one written by "
        "`python scripts/prepare_real_data.py`, or leave `--dataset_dir` out to train on the generated phantoms"
    )
    if not os.path.isdir(dataset_dir):
        raise DatasetNotFoundError(f"`dataset_dir` {dataset_dir} does not exist: {how}.")
    path = os.path.join(dataset_dir, "dataset.json")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"`dataset_dir` {dataset_dir} has no dataset.json: {how}.")
    return path
