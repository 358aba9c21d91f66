"""Reading and checking datasets in the Medical Segmentation Decathlon (MSD) layout.

A dataset folder holds ``dataset.json`` with a ``training`` list (``{"image": ..., "label": ...}`` items, paths
relative to the folder) and a ``test`` list (plain image paths, as in the MSD, or items with an optional label). The
functions here turn it into MONAI data lists with absolute paths, and fail loudly, naming the file, on what would
otherwise surface as an obscure error deep in a training run (or worse, be skipped silently):

* a missing or unreadable (corrupt) image or label file,
* an image with another number of channels than the network takes (``in_channels``), a label with more than one,
* an image and a label whose spatial shapes differ,
* label values that are not integers in ``[0, num_classes - 1]``,
* an empty or missing list.

:func:`read_dataset_json` is the package's one reader of ``dataset.json`` and :func:`read_datalist` its one list
reader (on top of MONAI's ``load_decathlon_datalist``); the segmentation bundles, the phantom and denoising
generators and the denoising splits all go through them.

Header checks (:func:`load_msd_datalist`) are cheap and run on the whole list before training starts; label values
need the voxels, so they are checked as the data is loaded, by the :class:`CheckLabeld` transform (or up front with
``check="full"``). Every such error is a :class:`DatasetError` with a one-line message that names the file and says
what was expected: :func:`monai_kan.handlers.exit_on_data_error` makes a bundle command end with that line and exit
status 1.

Example::

    train_files = load_msd_datalist("/data/Task09_Spleen", "training", num_classes=2)
    train, val = split_datalist(train_files, num_val=6)
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = [
    "CheckLabeld",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetReadError",
    "check_case",
    "load_msd_datalist",
    "read_dataset_json",
    "read_datalist",
    "split_datalist",
]

_CHECKS = ("none", "exists", "header", "full")


class DatasetError(ValueError):
    """A dataset file or list is missing, unreadable or inconsistent (the message names the file)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder, ``dataset.json`` or data file does not exist (a ``ValueError`` and a ``FileNotFoundError``)."""


class DatasetReadError(DatasetError, RuntimeError):
    """A data file exists but cannot be read: corrupt, truncated or not an image (also a ``RuntimeError``, as the
    readers' own errors are)."""


def _one_line(error: BaseException) -> str:
    """``"<type>: <message>"`` of a reader's error on one line (data errors end a bundle run in one line)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def read_dataset_json(dataset_dir: "str | os.PathLike") -> Dict[str, Any]:
    """Read ``<dataset_dir>/dataset.json`` (the one reader of the package; lists go through :func:`read_datalist`).

    Args:
        dataset_dir: MSD dataset folder.

    Raises:
        DatasetNotFoundError: the folder or the file is missing.
        DatasetError: the file is not a JSON object.
    """
    dataset_dir = os.fspath(dataset_dir)
    if not os.path.isdir(dataset_dir):
        raise DatasetNotFoundError(
            f"dataset folder {dataset_dir} does not exist (expected an MSD folder with dataset.json)."
        )
    path = os.path.join(dataset_dir, "dataset.json")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"{path} does not exist: `dataset_dir` must be a folder in the MSD layout "
                                   f"(dataset.json, imagesTr/, labelsTr/).")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{path} must hold a JSON object, got {type(meta).__name__}.")
    return meta


def _read_header(path: str) -> Tuple[Tuple[int, ...], int]:
    """Spatial shape and channel count from the file header, as MONAI's readers will load the file.

    NIfTI (nibabel): the first ``min(ndim, 3)`` axes are spatial and a 4th axis holds the channels (MONAI's
    ``NibabelReader``); more axes are refused. Other formats (SimpleITK): the image size and the components per pixel.
    """
    if path.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        shape = tuple(int(s) for s in nib.load(path).shape)
        if len(shape) > 4:
            raise DatasetError(f"{path} has {len(shape)} axes (shape {list(shape)}); expected up to 3 spatial axes "
                               f"and at most one channel axis.")
        return shape[:3], (shape[3] if len(shape) == 4 else 1)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return tuple(int(s) for s in reader.GetSize()), int(reader.GetNumberOfComponents())


def _read_voxels(path: str) -> np.ndarray:
    if path.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asanyarray(nib.load(path).dataobj)
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def _check_label_values(values: np.ndarray, num_classes: int, path: str) -> None:
    if values.size == 0:
        raise DatasetError(f"label {path} is empty.")
    if not np.all(np.isfinite(values)) or not np.all(np.equal(np.mod(values, 1), 0)):
        raise DatasetError(f"label {path} holds non-integer values; expected class indices 0..{num_classes - 1}.")
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 or hi > num_classes - 1:
        found = sorted(int(v) for v in np.unique(values))[:20]
        raise DatasetError(
            f"label {path} holds values {found}, outside 0..{num_classes - 1} (num_classes={num_classes}); "
            f"set `num_classes`/`class_names` to match the labels, or fix the label map."
        )


def check_case(
    item: Mapping[str, Any],
    check: str = "header",
    num_classes: Optional[int] = None,
    spatial_dims: Optional[int] = None,
    in_channels: Optional[int] = None,
) -> None:
    """Check one data-list item (``image`` and optional ``label`` paths).

    Args:
        item: ``{"image": path, "label": path}`` (label optional).
        check: ``"exists"`` (the files exist), ``"header"`` (also readable headers, the channel counts and equal
            image/label shapes) or ``"full"`` (also reads the voxels: corrupt or truncated data, label values in
            ``[0, num_classes - 1]``); ``"none"`` skips the checks.
        num_classes: number of classes, for ``check="full"``.
        spatial_dims: number of spatial axes the files must load with (as MONAI's readers load them: a NIfTI file
            ``[H, W, 1]`` or ``[H, W, 2]`` is a volume, not a 2D image).
        in_channels: channels the network takes; the image must have that many (``None``: not checked). A label
            always has one.

    Raises:
        DatasetError: naming the file and what was expected (:class:`DatasetNotFoundError` for a missing file).
    """
    if check not in _CHECKS:
        raise ValueError(f"`check` must be one of {_CHECKS}, got {check!r}.")
    if check == "none":
        return
    shapes = {}
    for key in ("image", "label"):
        path = item.get(key)
        if path is None:
            continue
        if not isinstance(path, str):
            raise DatasetError(f"{key} entry must be a file path, got {path!r}.")
        if not os.path.isfile(path):
            raise DatasetNotFoundError(f"{key} file {path} does not exist (the data list names it; expected an "
                                       f"image file there).")
        if check == "exists":
            continue
        try:
            spatial, channels = _read_header(path)
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001 - any reader failure means a corrupt or unsupported file
            raise DatasetReadError(f"{key} file {path} cannot be read (expected a NIfTI or ITK-readable image; corrupt "
                                   f"or not an image?): {_one_line(e)}") from e
        if spatial_dims is not None and len(spatial) != spatial_dims:
            layout = ("[H, W] in NIfTI, one channel: MONAI's NIfTI reader takes a third axis as spatial, not as "
                      "channels" if spatial_dims == 2 else "[H, W, D], or [H, W, D, C] for C channels")
            raise DatasetError(f"{key} file {path} has shape {list(spatial) + ([channels] if channels > 1 else [])}, "
                               f"which loads as a {len(spatial)}D image; expected a {spatial_dims}D image "
                               f"({layout}).")
        expected = 1 if key == "label" else in_channels
        if expected is not None and channels != expected:
            what = ("a single-channel label map of class indices" if key == "label"
                    else f"{expected} channel{'s' if expected > 1 else ''} (the network's in_channels={expected})")
            raise DatasetError(f"{key} file {path} has {channels} channels (spatial shape {list(spatial)}); "
                               f"expected {what}.")
        shapes[key] = spatial
        if check == "full":
            try:
                voxels = _read_voxels(path)
            except Exception as e:  # noqa: BLE001
                raise DatasetReadError(f"{key} file {path} cannot be read (corrupt or truncated data; expected "
                                       f"{'x'.join(map(str, spatial))} voxels): {_one_line(e)}") from e
            if key == "label" and num_classes is not None:
                _check_label_values(voxels, num_classes, path)
    if "image" in shapes and "label" in shapes and shapes["image"] != shapes["label"]:
        raise DatasetError(
            f"image {item['image']} has shape {list(shapes['image'])} but its label {item['label']} has shape "
            f"{list(shapes['label'])}; image and label must cover the same voxels."
        )


def load_msd_datalist(
    dataset_dir: str,
    split: str = "training",
    num_classes: Optional[int] = None,
    check: str = "header",
    spatial_dims: Optional[int] = None,
    require_labels: Optional[bool] = None,
    in_channels: Optional[int] = None,
) -> List[Dict[str, str]]:
    """Data list of one split of an MSD dataset, with absolute paths, checked.

    Args:
        dataset_dir: MSD dataset folder (holding ``dataset.json``).
        split: list of ``dataset.json`` to read (``"training"``, ``"test"``, or any other list key).
        num_classes: number of classes, for the label-value check of ``check="full"``; also checked against the
            ``labels`` entry of ``dataset.json`` when both are given.
        check: ``"none"``, ``"exists"``, ``"header"`` (default) or ``"full"`` (see :func:`check_case`).
        spatial_dims: number of spatial axes (see :func:`check_case`).
        require_labels: every item must have a label. Defaults to True for ``"training"``, False otherwise.
        in_channels: channels the network takes, checked against every image's header (``check`` of ``"header"`` or
            ``"full"``; see :func:`check_case`).

    Returns:
        list of ``{"image": abs_path, "label": abs_path}`` (``label`` only where given).

    Raises:
        DatasetError: a missing/unreadable ``dataset.json``, an empty list, a bad entry, a missing, corrupt or
            mismatched file (named in the message).
    """
    if num_classes is not None:
        meta = read_dataset_json(dataset_dir)
        if isinstance(meta.get("labels"), dict) and len(meta["labels"]) != num_classes:
            raise DatasetError(
                f"{os.path.join(dataset_dir, 'dataset.json')} defines {len(meta['labels'])} labels {meta['labels']} "
                f"but the bundle is set to num_classes={num_classes}; override `class_names` to match the dataset."
            )
    if require_labels is None:
        require_labels = split == "training"
    out = read_datalist(dataset_dir, split, require_labels=require_labels)
    for item in out:
        check_case(item, check, num_classes, spatial_dims, in_channels)
    return out


def read_datalist(dataset_dir: "str | os.PathLike", key: str = "training", require_labels: bool = False,
                  allow_empty: bool = False) -> List[Dict[str, str]]:
    """One list of ``dataset.json`` as ``[{"image": path, "label": path}, ...]``, paths joined to ``dataset_dir``.

    The paths are resolved by MONAI's :func:`monai.data.load_decathlon_datalist` (``os.path.normpath`` of the folder
    joined with the listed path; plain path entries, as in the MSD ``test`` lists, become ``{"image": path}``); only
    the ``image`` and ``label`` keys are kept. Before that, the list is checked here, with errors naming the file.

    Args:
        dataset_dir: dataset folder (holding ``dataset.json``).
        key: the list to read (``"training"``, ``"test"``, ...).
        require_labels: every entry must have a ``label`` path.
        allow_empty: return ``[]`` for an empty list instead of raising.

    Raises:
        DatasetNotFoundError: the folder or ``dataset.json`` is missing.
        DatasetError: unreadable JSON, no such list, an empty list, a malformed entry (the message names the file).
    """
    from monai.data import load_decathlon_datalist

    dataset_dir = os.fspath(dataset_dir)
    meta = read_dataset_json(dataset_dir)
    json_path = os.path.join(dataset_dir, "dataset.json")
    if key not in meta:
        raise DatasetError(f"{json_path} has no {key!r} list (found keys {sorted(meta)}).")
    entries = meta[key]
    if not isinstance(entries, list):
        raise DatasetError(f"the {key!r} entry of {json_path} must be a list, got {type(entries).__name__}.")
    if not entries:
        if allow_empty:
            return []
        raise DatasetError(f"the {key!r} list of {json_path} is empty: there is nothing to train or infer on.")
    for i, entry in enumerate(entries):
        item = {"image": entry} if isinstance(entry, str) else entry
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise DatasetError(f"entry {i} of the {key!r} list of {json_path} must be a path or a dict with an "
                               f"'image' path, got {entry!r}.")
        if require_labels and not isinstance(item.get("label"), str):
            raise DatasetError(f"entry {i} of the {key!r} list of {json_path} has no 'label' path: {entry!r}.")
    plain = [isinstance(e, str) for e in entries]
    if any(plain) and (key != "test" or not all(plain)):
        raise DatasetError(f"the {key!r} list of {json_path} must hold dicts ({{'image': path, ...}}); only a 'test' "
                           "list may instead hold plain paths, all of them.")
    try:
        items = load_decathlon_datalist(json_path, is_segmentation=True, data_list_key=key, base_dir=dataset_dir)
    except (TypeError, ValueError) as e:  # not expected after the checks above; named anyway
        raise DatasetError(f"cannot read the {key!r} list of {json_path}: {e}") from e
    return [{k: v for k, v in item.items() if k in ("image", "label") and isinstance(v, str)} for item in items]


def split_datalist(
    datalist: Sequence[Dict[str, Any]], num_val: int = 0, val_fraction: Optional[float] = None
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Deterministic train/validation split: the last ``num_val`` items validate, the rest train.

    Args:
        datalist: the ``training`` data list.
        num_val: number of validation items.
        val_fraction: if given, ``num_val = max(1, round(val_fraction * len(datalist)))`` instead.

    Returns:
        ``(train, val)``; both non-empty when ``num_val > 0``.

    Raises:
        DatasetError: too few items for the requested split.
    """
    n = len(datalist)
    if val_fraction is not None:
        if not 0 < val_fraction < 1:
            raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction!r}.")
        num_val = max(1, int(round(val_fraction * n)))
    if num_val < 0 or (num_val > 0 and n - num_val < 1):
        raise DatasetError(f"cannot keep {num_val} of {n} training items for validation and still train on one.")
    return list(datalist[: n - num_val]), list(datalist[n - num_val:])


class CheckLabeld(MapTransform):
    """Check loaded label maps (after ``LoadImaged``/``EnsureChannelFirstd``) before they reach the loss.

    The label must match the image's spatial shape and hold integer values in ``[0, num_classes - 1]``; a failure
    raises :class:`DatasetError` naming the file (from the image's metadata), never a silent skip.

    Args:
        keys: label key(s).
        num_classes: number of classes.
        image_key: key of the image the label must match. Defaults to ``"image"``; ``None`` skips the shape check.
        allow_missing_keys: as in :class:`monai.transforms.MapTransform`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        image_key: Optional[str] = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.image_key = image_key

    @staticmethod
    def _name(value: Any) -> str:
        meta = getattr(value, "meta", None) or {}
        return str(meta.get("filename_or_obj", "<in-memory label>"))

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            name = self._name(label)
            if self.image_key is not None and self.image_key in d:
                img_shape, lab_shape = tuple(d[self.image_key].shape[1:]), tuple(label.shape[1:])
                if img_shape != lab_shape:
                    raise DatasetError(
                        f"label {name} has spatial shape {list(lab_shape)} but its image "
                        f"{self._name(d[self.image_key])} has {list(img_shape)}."
                    )
            values = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
            _check_label_values(values, self.num_classes, name)
        return d
