"""Data for the KAE denoising bundle (``bundles/kae_denoising``): 2D slices, noise transforms and splits.

* :func:`synthetic_slice` / :func:`make_synthetic_dataset`: a deterministic generator of CT-like axial slices (body
  outline with a fat layer, textured organs, a lesion, vessels, a vertebra) of several sizes, written as 2D NIfTI in a
  Decathlon-style layout (``dataset.json``, ``imagesTr/``, ``imagesTs/``). Needs no download.
* :func:`make_mni152_dataset`: real axial slices of the MNI ICBM152 2009 T1 template that the ``nilearn`` PyPI package
  ships (``pip install nilearn``, or just the file, see :func:`find_mni152_template`).
* :class:`RandSaltPepperNoise` / :class:`RandSaltPepperNoised`: salt-and-pepper (impulse) noise, which MONAI lacks;
  Gaussian noise is MONAI's ``RandGaussianNoise(d)``.
* :class:`LoadSlice2Dd`: ``LoadImaged`` + channel first + checks (one channel, 2D, finite values) whose errors name
  the file.
* :func:`prepare_denoising_data`, :func:`denoising_datalist`, :func:`noisy_pairs`: the bundle's splits. Validation and
  test inputs are noisy copies written once to disk with a fixed seed per file, so every evaluation of a split sees
  the same noise and inference reads ordinary noisy image files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import LoadImage, MapTransform, RandGaussianNoise, RandomizableTransform, SaveImage
from monai.utils import TransformBackends, convert_to_tensor
from monai.data.meta_obj import get_track_meta
from scipy import ndimage

__all__ = [
    "RandSaltPepperNoise",
    "RandSaltPepperNoised",
    "LoadSlice2Dd",
    "synthetic_slice",
    "make_synthetic_dataset",
    "find_mni152_template",
    "make_mni152_dataset",
    "prepare_denoising_data",
    "denoising_datalist",
    "noisy_pairs",
    "image_files",
    "add_noise",
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_SHAPES",
    "MNI152_INSTALL_HINT",
]

PathLike = Union[str, os.PathLike]

#: slice shapes the synthetic generator cycles through (rows, columns): square and non-square, so that whole-slice
#: inference is exercised on several sizes
SYNTHETIC_SHAPES: Tuple[Tuple[int, int], ...] = ((128, 128), (112, 128), (128, 96), (96, 112))
_SYNTHETIC_VERSION = 1
#: file endings :func:`image_files` lists (what MONAI's ``LoadImage`` reads with nibabel, ITK or PIL)
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_MNI152_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI152_INSTALL_HINT = (
    "The MNI152 slices need the ICBM152 2009 T1 template that the `nilearn` PyPI package ships. Either\n"
    "  pip install nilearn\n"
    "or, without nilearn's dependencies,\n"
    "  pip download --no-deps nilearn==0.14.1 -d /tmp/nilearn && "
    f"unzip -j /tmp/nilearn/nilearn-*.whl 'nilearn/datasets/data/{_MNI152_FILE}' -d /tmp/nilearn\n"
    "and pass the file: `mni152_template=/tmp/nilearn/" + _MNI152_FILE + "` (or set MONAI_KAN_MNI152_T1)."
)


# --------------------------------------------------------------------------------------------------------- noise
class RandSaltPepperNoise(RandomizableTransform):
    """Salt-and-pepper noise: each element becomes ``high`` (salt) or ``low`` (pepper) with probability ``amount``.

    Args:
        prob: probability of applying the transform at all. Defaults to 1.0.
        amount: fraction of corrupted elements, in ``[0, 1]`` (the KAE paper uses 0.05). Defaults to 0.05.
        salt_vs_pepper: fraction of the corrupted elements set to ``high``, in ``[0, 1]``. Defaults to 0.5.
        low: pepper value. Defaults to 0.0.
        high: salt value. Defaults to 1.0.

    Input and output: an image of any shape (channel first), returned as a tensor of the same shape.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self, prob: float = 1.0, amount: float = 0.05, salt_vs_pepper: float = 0.5, low: float = 0.0, high: float = 1.0
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        for name, value in (("amount", amount), ("salt_vs_pepper", salt_vs_pepper)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {value!r}.")
        if low > high:
            raise ValueError(f"`low` must be <= `high`, got low={low!r}, high={high!r}.")
        self.amount = float(amount)
        self.salt_vs_pepper = float(salt_vs_pepper)
        self.low = low
        self.high = high
        self._uniform: Optional[np.ndarray] = None

    def randomize(self, img) -> None:  # type: ignore[override]
        super().randomize(None)
        if self._do_transform:
            self._uniform = self.R.random_sample(tuple(img.shape)).astype(np.float32)

    def __call__(self, img, randomize: bool = True):
        img = convert_to_tensor(img, track_meta=get_track_meta())
        if randomize:
            self.randomize(img)
        if not self._do_transform or self.amount == 0.0:
            return img
        if self._uniform is None:
            raise RuntimeError("please call `randomize()` first.")
        u = torch.as_tensor(self._uniform, device=img.device)
        salt = u < self.amount * self.salt_vs_pepper
        pepper = (u >= self.amount * self.salt_vs_pepper) & (u < self.amount)
        out = img.clone()
        out[pepper] = self.low
        out[salt] = self.high
        return out


class RandSaltPepperNoised(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandSaltPepperNoise`; all ``keys`` get the same corrupted positions.

    Args:
        keys: keys of the images to corrupt.
        prob: probability of applying the transform. Defaults to 1.0.
        amount: fraction of corrupted elements. Defaults to 0.05.
        salt_vs_pepper: fraction of corrupted elements set to ``high``. Defaults to 0.5.
        low: pepper value. Defaults to 0.0.
        high: salt value. Defaults to 1.0.
        allow_missing_keys: do not fail when a key is missing.
    """

    backend = RandSaltPepperNoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        amount: float = 0.05,
        salt_vs_pepper: float = 0.5,
        low: float = 0.0,
        high: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.noise = RandSaltPepperNoise(1.0, amount, salt_vs_pepper, low, high)

    def set_random_state(self, seed=None, state=None) -> "RandSaltPepperNoised":
        super().set_random_state(seed, state)
        self.noise.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize(None)
        first = self.first_key(d)
        if not self._do_transform or first == ():
            return d
        self.noise.randomize(d[first])
        for key in self.key_iterator(d):
            d[key] = self.noise(d[key], randomize=False)
        return d


def add_noise(
    clean: torch.Tensor, noise_std: float, salt_pepper: float, seed: int, a_min: float = 0.0, a_max: float = 1.0
) -> torch.Tensor:
    """Deterministic noisy copy of ``clean``: Gaussian (``noise_std``) then salt-and-pepper (``salt_pepper``).

    Noise levels are relative to the intensity window ``[a_min, a_max]`` (the range mapped to ``[0, 1]``); the result
    is clipped to that window, like the bundle's training noise.

    Args:
        clean: image, any shape.
        noise_std: Gaussian standard deviation (fraction of the window), ``>= 0``.
        salt_pepper: salt-and-pepper fraction, in ``[0, 1]``.
        seed: random seed (same seed, same noise).
        a_min: intensity mapped to 0. Defaults to 0.
        a_max: intensity mapped to 1. Defaults to 1.
    """
    if noise_std < 0:
        raise ValueError(f"`noise_std` must be >= 0, got {noise_std!r}.")
    if a_max <= a_min:
        raise ValueError(f"`a_max` must be > `a_min`, got a_min={a_min!r}, a_max={a_max!r}.")
    x = (torch.as_tensor(clean, dtype=torch.float32) - a_min) / (a_max - a_min)
    if noise_std > 0:
        x = RandGaussianNoise(prob=1.0, std=noise_std, sample_std=False).set_random_state(seed)(x)
    x = RandSaltPepperNoise(1.0, salt_pepper).set_random_state(seed + 1)(x)
    return x.clamp(0.0, 1.0) * (a_max - a_min) + a_min


# ------------------------------------------------------------------------------------------------------ loading
class LoadSlice2Dd(MapTransform):
    """Load 2D single-channel images as ``(1, H, W)`` MetaTensors; every failure names the file.

    ``LoadImaged`` + ``EnsureChannelFirstd`` with checks: the file exists and can be read, the image is 2D with one
    channel, and holds no NaN or infinity.

    Args:
        keys: keys holding image file paths.
        dtype: data type of the loaded arrays. Defaults to float32.
        allow_missing_keys: do not fail when a key is missing.
    """

    def __init__(self, keys: KeysCollection, dtype=np.float32, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImage(image_only=True, ensure_channel_first=True, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, object]) -> Dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_slice(d[key], self.loader)
        return d


def load_slice(path, loader: Optional[LoadImage] = None) -> torch.Tensor:
    """Load one 2D single-channel image as ``(1, H, W)``; errors name ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected an image file path, got {type(path).__name__}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: '{path}'.")
    loader = loader or LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)
    try:
        img = loader(path)
    except Exception as e:  # readers fail with messages that often omit the path (e.g. a truncated .gz)
        raise RuntimeError(
            f"cannot read image file '{path}' (corrupt or not an image?): {type(e).__name__}: {e}"
        ) from e
    if img.ndim != 3:
        raise ValueError(
            f"'{path}': expected a 2D image, got spatial shape {tuple(img.shape[1:])}; "
            "the denoising bundle works on 2D slices (save each slice as its own 2D file)."
        )
    if img.shape[0] != 1:
        raise ValueError(f"'{path}': expected a single-channel (grayscale) image, got {img.shape[0]} channels.")
    if img.numel() == 0 or not bool(torch.isfinite(img).all()):
        raise ValueError(f"'{path}': the image is empty or contains NaN/infinite values.")
    return img


# ------------------------------------------------------------------------------------------- synthetic slices
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


def _slice_affine(spacing: float) -> np.ndarray:
    affine = np.diag([spacing, spacing, 1.0, 1.0])
    return affine


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine), str(path))


def _dataset_is_current(root: Path, generator: dict) -> bool:
    try:
        with open(root / "dataset.json") as f:
            return json.load(f).get("generator") == generator
    except (OSError, ValueError):
        return False


def _publish(tmp: Path, root: Path) -> None:
    """Move the finished folder ``tmp`` to ``root`` (replacing an outdated one) so readers never see half a set."""
    if root.exists():
        old = root.with_name(root.name + f".old-{os.getpid()}")
        os.replace(root, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, root)


def _write_dataset(root: Path, generator: dict, meta: dict, train: List[Tuple[str, np.ndarray, np.ndarray]],
                   test: List[Tuple[str, np.ndarray, np.ndarray]]) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    (tmp / "imagesTr").mkdir()
    (tmp / "imagesTs").mkdir()
    for folder, items in (("imagesTr", train), ("imagesTs", test)):
        for name, array, affine in items:
            _write_nifti(tmp / folder / name, array, affine)
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
    with open(tmp / "dataset.json", "w") as f:
        json.dump(dataset, f, indent=2)
    _publish(tmp, root)
    return root


def make_synthetic_dataset(
    root: PathLike, num_train: int = 64, num_test: int = 16, seed: int = 0, spacing: float = 0.8
) -> Path:
    """Write (or reuse) the synthetic slice set: ``root/dataset.json``, ``imagesTr/*.nii.gz``, ``imagesTs/*.nii.gz``.

    Slice ``i`` of the training (test) split uses seed ``seed * 1_000_003 + i`` (``+ 500_000 + i``) and shape
    ``SYNTHETIC_SHAPES[i % 4]``, so a split does not change when the other's size changes. An existing set made with
    the same arguments is reused; otherwise it is regenerated (written to a temporary folder, then moved in place).

    Args:
        root: output folder.
        num_train: training slices (the bundle takes its validation slices from these). Defaults to 64.
        num_test: held-out test slices. Defaults to 16.
        seed: generator seed. Defaults to 0.
        spacing: in-plane pixel spacing in mm written to the NIfTI headers. Defaults to 0.8.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    root = Path(root)
    generator = {"kind": "synthetic", "version": _SYNTHETIC_VERSION, "num_train": num_train, "num_test": num_test,
                 "seed": int(seed), "spacing": float(spacing)}
    if _dataset_is_current(root, generator):
        return root
    affine = _slice_affine(spacing)

    def items(n: int, offset: int) -> List[Tuple[str, np.ndarray, np.ndarray]]:
        out = []
        for i in range(n):
            array = synthetic_slice(SYNTHETIC_SHAPES[i % len(SYNTHETIC_SHAPES)], seed * 1_000_003 + offset + i)
            out.append((f"synthetic_{i:03d}.nii.gz", array, affine))
        return out

    meta = {
        "name": "KAE denoising synthetic CT-like slices",
        "description": "Deterministic generated axial slices (monai_kan.data.denoising_data.synthetic_slice), "
        "intensities in [0, 1].",
        "licence": "CC0-1.0 (generated data)",
        "reference": "monai-kan",
    }
    return _write_dataset(root, generator, meta, items(num_train, 0), items(num_test, 500_000))


# --------------------------------------------------------------------------------------------- MNI152 slices
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
    import nibabel as nib

    for name, value in (("step", step), ("block", block), ("test_every", test_every)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    root = Path(root)
    template = find_mni152_template(template)
    generator = {"kind": "mni152", "file": template.name, "size": template.stat().st_size, "step": step,
                 "block": block, "test_every": test_every}
    if _dataset_is_current(root, generator):
        return root
    try:
        image = nib.load(str(template))
        volume = np.asarray(image.get_fdata(), dtype=np.float32)
    except Exception as e:
        raise RuntimeError(f"cannot read the MNI152 template '{template}': {e}") from e
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
    return _write_dataset(root, generator, meta, train, test)


# ------------------------------------------------------------------------------------------------- the splits
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
            raise FileNotFoundError(
                f"dataset_dir '{root}' has no dataset.json; expected a Decathlon-style folder "
                "(dataset.json with 'training' and 'test' lists of 2D images)."
            )
        return str(root)
    if data_source == "synthetic":
        return str(make_synthetic_dataset(Path(cache_dir) / "synthetic", num_train, num_test, seed).resolve())
    if data_source == "mni152":
        return str(make_mni152_dataset(Path(cache_dir) / "mni152", mni152_template).resolve())
    raise ValueError(f"`data_source` must be 'synthetic' or 'mni152' (or give dataset_dir), got {data_source!r}.")


def _read_dataset_json(root: Path) -> dict:
    path = root / "dataset.json"
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"dataset list not found: '{path}'.") from None
    except ValueError as e:
        raise ValueError(f"'{path}' is not valid JSON: {e}") from e


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
        ValueError: unknown split, malformed entries, or an empty split.
    """
    root = Path(data_root)
    dataset = _read_dataset_json(root)
    key = {"train": "training", "validation": "training", "test": "test"}.get(split)
    if key is None:
        raise ValueError(f"`split` must be 'train', 'validation' or 'test', got {split!r}.")
    entries = dataset.get(key) or []
    paths = []
    for entry in entries:
        rel = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(rel, str):
            raise ValueError(f"'{root / 'dataset.json'}': malformed '{key}' entry {entry!r} (expected a path).")
        paths.append(str((root / rel).resolve()))
    if key == "training":
        n_val = int(num_val) if isinstance(num_val, int) else int(np.ceil(float(num_val) * len(paths)))
        n_val = min(max(n_val, 1), max(len(paths) - 1, 0))
        paths = paths[len(paths) - n_val :] if split == "validation" else paths[: len(paths) - n_val]
    if not paths:
        raise ValueError(f"split '{split}' of '{root / 'dataset.json'}' is empty ('{key}' lists {len(entries)}).")
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file not found: '{path}' (listed in '{root / 'dataset.json'}').")
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
        salt_pepper: salt-and-pepper fraction. Defaults to 0.05.
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
        raise FileNotFoundError(f"input folder not found: '{folder}'.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in '{folder}'.")
    return [{"image": str(p.resolve())} for p in files]
