"""Writing a dataset folder in the Medical Segmentation Decathlon (MSD) layout, atomically.

:func:`new_msd_folder` is the one way the data modules publish a folder (phantoms, registry conversions, denoising
slices): the files are written into a temporary folder beside the target (``.<name>.tmp-<random>``, created like any
``mkdir``, so it gets the usual ``0o777 & ~umask`` mode, 0755 under umask 022), which is renamed to the target only
when complete. Readers never see half a dataset; an interrupted write leaves no target (and no temporary folder,
unless the process is killed outright). An existing non-empty target is only replaced when the caller says so.

:func:`write_slice_dataset` writes the 2D image-only sets of the denoising bundle (``imagesTr/``, ``imagesTs/`` and a
``dataset.json`` that records the generator settings, so :func:`is_current` can tell whether a set can be reused).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple, Union

import numpy as np

from monai_kan.data.msd import DatasetError, read_dataset_json

__all__ = ["FolderExistsError", "new_msd_folder", "save_nifti", "write_slice_dataset", "is_current"]

PathLike = Union[str, os.PathLike]
#: one 2D slice to write: (file name, array (H, W), affine)
SliceItem = Tuple[str, np.ndarray, np.ndarray]


def _is_empty_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.listdir(path)


class FolderExistsError(FileExistsError, ValueError):
    """The target folder exists and holds files (the message names it)."""


@contextmanager
def new_msd_folder(
    root: PathLike,
    overwrite: bool = False,
    subfolders: Sequence[str] = ("imagesTr", "labelsTr", "imagesTs", "labelsTs"),
    keep_concurrent: bool = False,
    hint: str = "",
) -> Iterator[str]:
    """Write an MSD folder atomically: yields a temporary folder beside ``root`` that becomes ``root`` on success.

    Args:
        root: the folder to create. It may not exist yet, or be an empty folder.
        overwrite: replace an existing non-empty ``root`` (moved aside, the new folder moved in, the old one
            deleted). Without it a non-empty ``root`` raises :class:`FileExistsError` before anything is written.
        subfolders: created inside the temporary folder before it is yielded.
        keep_concurrent: if another writer published ``root`` (with a ``dataset.json``) while this one was writing,
            keep theirs and discard ours (for writers of identical, deterministic data, e.g. distributed ranks).
        hint: appended to the message of the error about an existing folder.

    Raises:
        FileExistsError: ``root`` exists and is not an empty folder, and ``overwrite`` is False (also a
            :class:`ValueError`).

    On any exception inside the ``with`` block the temporary folder is deleted and ``root`` is left as it was.
    """
    root = os.path.abspath(os.fspath(root))
    if os.path.exists(root) and not _is_empty_dir(root) and not overwrite:
        message = f"cannot write a dataset into {root}: it exists and is not an empty folder. {hint}"
        raise FolderExistsError(message.strip())
    parent, name = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    while True:  # like tempfile.mkdtemp, but with the mode of a plain mkdir (mkdtemp makes it 0700)
        tmp = os.path.join(parent, f".{name}.tmp-{secrets.token_hex(4)}")
        try:
            os.mkdir(tmp)
            break
        except FileExistsError:
            continue
    try:
        for sub in subfolders:
            os.makedirs(os.path.join(tmp, sub))
        yield tmp
        _publish(tmp, root, overwrite, keep_concurrent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: str, root: str, overwrite: bool, keep_concurrent: bool) -> None:
    """Move the finished folder ``tmp`` to ``root``; an old non-empty ``root`` only goes when ``overwrite``."""
    old = None
    if os.path.exists(root) and not _is_empty_dir(root):
        if not overwrite:
            if keep_concurrent and os.path.isfile(os.path.join(root, "dataset.json")):
                shutil.rmtree(tmp, ignore_errors=True)  # another writer finished first: keep its (identical) files
                return
            raise FolderExistsError(f"cannot write a dataset into {root}: it was filled while this one was written.")
        old = f"{os.path.join(os.path.dirname(root), '.' + os.path.basename(root))}.old-{secrets.token_hex(4)}"
        os.replace(root, old)
    try:
        if _is_empty_dir(root):
            os.rmdir(root)  # fails if another writer filled it meanwhile
        os.rename(tmp, root)
    except OSError:
        if old is not None:
            os.replace(old, root)  # put the previous folder back
            raise
        if not (keep_concurrent and os.path.isfile(os.path.join(root, "dataset.json"))):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_nifti(path: PathLike, array: np.ndarray, affine: np.ndarray, xyz_mm: bool = False) -> None:
    """Save ``array`` as NIfTI with ``affine`` (``xyz_mm``: also set the spatial unit to mm in the header)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    if xyz_mm:
        img.header.set_xyzt_units("mm")
    nib.save(img, os.fspath(path))


def is_current(root: PathLike, generator: dict) -> bool:
    """True if ``root/dataset.json`` exists and records exactly the generator settings ``generator``."""
    try:
        return read_dataset_json(os.fspath(root)).get("generator") == generator
    except DatasetError:
        return False


def write_slice_dataset(root: PathLike, generator: dict, meta: dict, train: List[SliceItem],
                        test: List[SliceItem]) -> Path:
    """Write 2D slices (float32 NIfTI) and ``dataset.json`` into ``root``, atomically.

    ``root`` is replaced only if it is empty or holds a set written by a generator of this module (its
    ``dataset.json`` has a ``generator`` entry, e.g. one made with other settings); other data are never deleted.
    """
    root = Path(root)
    overwrite = False
    if root.exists() and not _is_empty_dir(str(root)):
        try:
            overwrite = "generator" in read_dataset_json(str(root))
        except DatasetError:
            overwrite = False
        if not overwrite:
            raise FolderExistsError(f"cannot write a generated dataset into {root}: it holds other files (no "
                                    "generated dataset.json); delete it or choose another folder.")
    with new_msd_folder(root, overwrite=overwrite, subfolders=("imagesTr", "imagesTs")) as tmp:
        for folder, items in (("imagesTr", train), ("imagesTs", test)):
            for name, array, affine in items:
                save_nifti(Path(tmp) / folder / name, np.asarray(array, dtype=np.float32), affine)
        dataset = dict(meta)
        dataset.update(
            {
                "generator": generator,
                "tensorImageSize": "2D",
                "modality": {"0": meta.get("modality_name", "CT")},
                "numTraining": len(train),
                "numTest": len(test),
                "training": [{"image": f"./imagesTr/{name}"} for name, _, _ in train],
                "test": [f"./imagesTs/{name}" for name, _, _ in test],
            }
        )
        with open(Path(tmp) / "dataset.json", "w") as f:
            json.dump(dataset, f, indent=2)
    return root
