"""Synthetic CT-like 2D slices for the KAE denoising bundle (``bundles/kae_denoising``); needs no download.

:func:`synthetic_slice` draws one deterministic axial slice (body outline with a fat layer, textured organs, a lesion,
vessels, a vertebra); :func:`make_synthetic_dataset` writes a set of them, of several sizes
(:data:`SYNTHETIC_SHAPES`), as 2D NIfTI in a Decathlon-style layout (``dataset.json``, ``imagesTr/``, ``imagesTs/``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from monai_kan.utils import check_int
from monai_kan.data.msd_writer import is_current, write_slice_dataset

__all__ = ["SYNTHETIC_SHAPES", "make_synthetic_dataset", "synthetic_slice"]

PathLike = Union[str, os.PathLike]

#: slice shapes the synthetic generator cycles through (rows, columns): square and non-square, so that whole-slice
#: inference is exercised on several sizes
SYNTHETIC_SHAPES: Tuple[Tuple[int, int], ...] = ((128, 128), (112, 128), (128, 96), (96, 112))
_SYNTHETIC_VERSION = 1


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _texture(rng: np.random.Generator, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def synthetic_slice(shape: Sequence[int] = (128, 128), seed: int = 0) -> np.ndarray:
    """One CT-like axial slice in ``[0, 1]``: body with fat layer, textured organs, a lesion, vessels, a vertebra.

    Args:
        shape: ``(H, W)``, each at least 16.
        seed: random seed; the same ``(shape, seed)`` always gives the same slice.

    Returns:
        float32 array ``(H, W)`` with values in ``[0, 1]`` (air 0, fat ~0.2, soft tissue ~0.4, bone ~0.95).
    """
    if len(shape) != 2 or any(not isinstance(s, (int, np.integer)) or s < 16 for s in shape):
        raise ValueError(f"`shape` must be two integers >= 16, got {shape!r}.")
    h, w = int(shape[0]), int(shape[1])
    rng = np.random.default_rng(seed)
    scale = min(h, w) / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = (yy - (h - 1) / 2.0) / scale, (xx - (w - 1) / 2.0) / scale  # unit = half the short side
    img = np.zeros((h, w))

    # body: an ellipse filling most of the field of view, a fat layer under the skin
    by, bx = rng.uniform(0.70, 0.88), rng.uniform(0.78, 0.95) * (w / min(h, w)) ** 0.5
    cy, cx, tilt = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(-0.15, 0.15)
    body = _ellipse(yy, xx, cy, cx, by, bx, tilt)
    inner = _ellipse(yy, xx, cy, cx, by - rng.uniform(0.06, 0.12), bx - rng.uniform(0.06, 0.12), tilt)
    img[body] = 0.20 + 0.02 * _texture(rng, (h, w), 2.0)[body]
    img[inner] = 0.40 + 0.025 * _texture(rng, (h, w), 3.0)[inner]

    # organs: textured ellipses inside the body; one may hold a lesion
    organs = []
    for _ in range(int(rng.integers(2, 5))):
        oy, ox = cy + rng.uniform(-0.45, 0.35) * by, cx + rng.uniform(-0.55, 0.55) * bx
        ry, rx = rng.uniform(0.12, 0.30), rng.uniform(0.12, 0.35)
        mask = _ellipse(yy, xx, oy, ox, ry, rx, rng.uniform(0, np.pi)) & inner
        level = rng.uniform(0.48, 0.72)
        img[mask] = level + 0.03 * _texture(rng, (h, w), rng.uniform(1.5, 4.0))[mask]
        organs.append((oy, ox, ry, rx, level))
    if organs and rng.random() < 0.8:
        oy, ox, ry, rx, level = organs[int(rng.integers(len(organs)))]
        lesion = _ellipse(yy, xx, oy + rng.uniform(-0.4, 0.4) * ry, ox + rng.uniform(-0.4, 0.4) * rx,
                          rng.uniform(0.03, 0.08), rng.uniform(0.03, 0.08), rng.uniform(0, np.pi)) & inner
        img[lesion] = level + rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.22)

    # vessels: small bright disks; vertebra: cortical ring around a darker core, behind the organs
    for _ in range(int(rng.integers(2, 6))):
        r = rng.uniform(0.02, 0.045)
        vessel = _ellipse(yy, xx, cy + rng.uniform(-0.3, 0.4) * by, cx + rng.uniform(-0.5, 0.5) * bx, r, r, 0.0)
        img[vessel & inner] = rng.uniform(0.78, 0.88)
    vy, vr = cy + 0.62 * by, rng.uniform(0.09, 0.13)
    img[_ellipse(yy, xx, vy, cx, vr, vr * 1.2, 0.0) & inner] = 0.95
    img[_ellipse(yy, xx, vy, cx, vr * 0.65, vr * 0.8, 0.0) & inner] = 0.62

    img = ndimage.gaussian_filter(img, 0.6)  # partial-volume blur: edges as a scanner sees them
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def make_synthetic_dataset(
    root: PathLike, num_train: int = 64, num_test: int = 16, seed: int = 0, spacing: float = 0.8
) -> Path:
    """Write (or reuse) the synthetic slice set: ``root/dataset.json``, ``imagesTr/*.nii.gz``, ``imagesTs/*.nii.gz``.

    Slice ``i`` of the training (test) split uses seed ``seed * 1_000_003 + i`` (``+ 500_000 + i``) and shape
    ``SYNTHETIC_SHAPES[i % 4]``, so a split does not change when the other's size changes. An existing set made with
    the same arguments is reused; a set made with other arguments is regenerated (written to a temporary folder, then
    moved in place, see :func:`~monai_kan.data.msd_writer.write_slice_dataset`); a folder holding other data is
    never overwritten.

    Args:
        root: output folder.
        num_train: training slices (the bundle takes its validation slices from these). Defaults to 64.
        num_test: held-out test slices. Defaults to 16.
        seed: generator seed. Defaults to 0.
        spacing: in-plane pixel spacing in mm written to the NIfTI headers. Defaults to 0.8.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    check_int("num_train", num_train)
    check_int("num_test", num_test)
    root = Path(root)
    generator = {"kind": "synthetic", "version": _SYNTHETIC_VERSION, "num_train": num_train, "num_test": num_test,
                 "seed": int(seed), "spacing": float(spacing)}
    if is_current(root, generator):
        return root
    affine = np.diag([spacing, spacing, 1.0, 1.0])

    def items(n: int, offset: int) -> List[Tuple[str, np.ndarray, np.ndarray]]:
        out = []
        for i in range(n):
            array = synthetic_slice(SYNTHETIC_SHAPES[i % len(SYNTHETIC_SHAPES)], seed * 1_000_003 + offset + i)
            out.append((f"synthetic_{i:03d}.nii.gz", array, affine))
        return out

    meta = {
        "name": "KAE denoising synthetic CT-like slices",
        "description": "Deterministic generated axial slices (monai_kan.data.synthetic_slices.synthetic_slice), "
        "intensities in [0, 1].",
        "licence": "CC0-1.0 (generated data)",
        "reference": "monai-kan",
    }
    return write_slice_dataset(root, generator, meta, items(num_train, 0), items(num_test, 500_000))
