"""The MNI ICBM152 2009a (nonlinear symmetric) T1 template that the ``nilearn`` PyPI package ships: found and loaded
here, for both of its users.

* :func:`find_mni152_template`: the T1 file of an installed ``nilearn`` (or a given path / ``$MONAI_KAN_MNI152_T1``).
* :func:`load_mni152`: the one reader (nibabel image and float32 volume; errors name the file).
* :func:`make_mni152_dataset`: axial T1 slices in ``[0, 1]`` for the KAE denoising bundle (``data_source=mni152``).
  The brain-tissue segmentation sets are written by ``scripts/prepare_real_data.py`` (outside the package: it
  fetches the nilearn wheel with ``pip download``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from monai_kan.utils import check_int
from monai_kan.data.msd_writer import is_current, write_slice_dataset

__all__ = [
    "MNI152_INSTALL_HINT",
    "find_mni152_template",
    "load_mni152",
    "make_mni152_dataset",
]

PathLike = Union[str, os.PathLike]

_MNI152_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI152_INSTALL_HINT = (
    "The MNI152 slices need the ICBM152 2009 T1 template that the `nilearn` PyPI package ships. Either\n"
    "  pip install nilearn\n"
    "or, without nilearn's dependencies,\n"
    "  pip download --no-deps nilearn==0.14.1 -d /tmp/nilearn && "
    f"unzip -j /tmp/nilearn/nilearn-*.whl 'nilearn/datasets/data/{_MNI152_FILE}' -d /tmp/nilearn\n"
    "and pass the file: `mni152_template=/tmp/nilearn/" + _MNI152_FILE + "` (or set MONAI_KAN_MNI152_T1)."
)


def find_mni152_template(path: Optional[PathLike] = None) -> Path:
    """Locate the ICBM152 2009 T1 template shipped by ``nilearn``.

    Looks at ``path``, then ``$MONAI_KAN_MNI152_T1``, then the installed ``nilearn`` package (found without importing
    it, so ``pip install --no-deps nilearn`` is enough).

    Raises:
        FileNotFoundError: naming where it looked and how to install the file (:data:`MNI152_INSTALL_HINT`).
    """
    candidates = [Path(p) for p in (path, os.environ.get("MONAI_KAN_MNI152_T1")) if p]
    spec = importlib.util.find_spec("nilearn")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "datasets" / "data" / _MNI152_FILE for p in spec.submodule_search_locations]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "nowhere (nilearn is not installed)"
    raise FileNotFoundError(f"MNI152 T1 template not found (looked at: {looked}).\n{MNI152_INSTALL_HINT}")


def load_mni152(path: PathLike):
    """Read one MNI152 file (template or probability map).

    Returns:
        ``(image, volume)``: the nibabel image (affine, header) and its voxels as a float32 array.

    Raises:
        RuntimeError: the file cannot be read (the message names it).
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
        return image, np.asarray(image.get_fdata(), dtype=np.float32)
    except Exception as e:
        raise RuntimeError(f"cannot read the MNI152 file '{path}': {e}") from e


def make_mni152_dataset(
    root: PathLike, template: Optional[PathLike] = None, step: int = 2, block: int = 8, test_every: int = 4
) -> Path:
    """Write (or reuse) axial slices of the MNI152 T1 template as 2D NIfTI, with intensities scaled to ``[0, 1]``.

    Every ``step``-th axial slice that holds at least 15 % head voxels is kept. Consecutive kept slices form blocks of
    ``block``; every ``test_every``-th block goes to the test split, the others to training, so test slices are not
    the immediate neighbours of many training slices.

    Args:
        root: output folder.
        template: the template file; see :func:`find_mni152_template`.
        step: keep every ``step``-th axial slice. Defaults to 2.
        block: slices per train/test block. Defaults to 8.
        test_every: every ``test_every``-th block is test data. Defaults to 4.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    for name, value in (("step", step), ("block", block), ("test_every", test_every)):
        check_int(name, value)
    root = Path(root)
    template = find_mni152_template(template)
    generator = {"kind": "mni152", "file": template.name, "size": template.stat().st_size, "step": step,
                 "block": block, "test_every": test_every}
    if is_current(root, generator):
        return root
    image, volume = load_mni152(template)
    hi = float(np.percentile(volume[volume > 0], 99.5))
    volume = np.clip(volume / hi, 0.0, 1.0)
    zooms = image.header.get_zooms()
    affine = np.diag([float(zooms[0]), float(zooms[1]), 1.0, 1.0])
    kept = [z for z in range(0, volume.shape[2], step) if (volume[:, :, z] > 0.05).mean() >= 0.15]
    train, test = [], []
    for j, z in enumerate(kept):
        item = (f"mni152_z{z:03d}.nii.gz", volume[:, :, z], affine)
        (test if (j // block) % test_every == test_every - 1 else train).append(item)
    if not train or not test:
        raise ValueError(
            f"'{template}' gave {len(kept)} axial slices with enough head, too few for train and test splits "
            f"(block={block}, test_every={test_every}): lower `step` or `block`."
        )
    meta = {
        "name": "MNI ICBM152 2009a symmetric T1 template, axial slices",
        "description": f"Axial slices of {template.name} (shipped by the nilearn PyPI package), divided by the 99.5th "
        "intensity percentile and clipped to [0, 1].",
        "licence": "see bundles/kae_denoising/docs/data_license.txt (ICBM152 2009 copyright notice)",
        "reference": "Fonov et al., NeuroImage 2011; Fonov et al., NeuroImage 2009 (OHBM)",
        "modality_name": "T1w MRI",
    }
    return write_slice_dataset(root, generator, meta, train, test)
