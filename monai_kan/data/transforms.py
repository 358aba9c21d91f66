"""Transforms of monai-kan's data pipelines: salt-and-pepper noise, fixed noisy copies, checked 2D slice loading.

* :func:`salt_and_pepper_noise`: the one salt-and-pepper rule of the package, with an explicit total ``amount``
  (the fraction of elements changed: ``amount / 2`` set to 0, ``amount / 2`` set to 1 by default). The KAE paper's
  evaluation protocol (``benchmarks.kae_protocol.metrics.add_salt_and_pepper_noise``, outside the package) uses
  ``amount=0.10`` (5 % pepper plus 5 % salt, the authors' ``(0.05, 0.95)``); the denoising bundle uses
  ``amount=0.05`` (2.5 % plus 2.5 %).
* :class:`RandSaltPepperNoise` / :class:`RandSaltPepperNoised`: the same rule as MONAI transforms (MONAI has no
  salt-and-pepper noise; Gaussian noise is MONAI's ``RandGaussianNoise(d)``).
* :func:`add_noise`: the deterministic Gaussian + salt-and-pepper copy behind the denoising bundle's fixed validation
  and test inputs.
* :class:`CheckedLoadImaged`: MONAI's ``LoadImaged`` (channel first) whose errors name the file: a missing file, one
  that cannot be read (corrupt, truncated: nibabel reads the voxels lazily, so a truncated ``.nii.gz`` with an intact
  header fails with a bare ``EOFError``), or one with another channel count or spatial rank than expected.
* :class:`LoadSlice2Dd` / :func:`load_slice`: ``LoadImaged`` + channel first + checks (one channel, 2D, finite values)
  whose errors name the file.

Every error here is a :class:`~monai_kan.data.msd.DatasetError` (one line naming the file), which
:func:`monai_kan.handlers.exit_on_data_error` turns into the last line of a bundle command and exit status 1.

The MSD segmentation label check, :class:`monai_kan.data.msd.CheckLabeld`, lives with the MSD reader it belongs to.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Hashable, Mapping, Optional

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.meta_obj import get_track_meta
from monai.transforms import LoadImage, LoadImaged, MapTransform, RandGaussianNoise, RandomizableTransform
from monai.utils import TransformBackends, convert_to_tensor

from monai_kan.data.msd import DatasetError, DatasetNotFoundError, DatasetReadError, _one_line

__all__ = [
    "CheckedLoadImaged",
    "LoadSlice2Dd",
    "RandSaltPepperNoise",
    "RandSaltPepperNoised",
    "add_noise",
    "load_slice",
    "salt_and_pepper_noise",
]


def _check_amount(amount: float, salt_vs_pepper: float, low: float, high: float) -> None:
    for name, value in (("amount", amount), ("salt_vs_pepper", salt_vs_pepper)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1], got {value!r}.")
    if low > high:
        raise ValueError(f"`low` must be <= `high`, got low={low!r}, high={high!r}.")


def salt_and_pepper_noise(
    x: torch.Tensor,
    amount: float,
    generator: Optional[torch.Generator] = None,
    salt_vs_pepper: float = 0.5,
    low: float = 0.0,
    high: float = 1.0,
    uniform: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Salt-and-pepper noise: a fraction ``amount`` of the elements changed, ``salt_vs_pepper`` of them to ``high``.

    The rule (the KAE authors'): one uniform draw ``u`` in ``[0, 1)`` per element; pepper (``low``) where
    ``u < amount * (1 - salt_vs_pepper)``, salt (``high``) where ``u > 1 - amount * salt_vs_pepper``; the rest is
    unchanged. With the default ``salt_vs_pepper=0.5``, ``amount=0.10`` means 5 % pepper plus 5 % salt.

    Args:
        x: image or batch, any shape.
        amount: total fraction of changed elements, in ``[0, 1]``.
        generator: torch generator of the draws (``torch.rand``). Ignored when ``uniform`` is given.
        salt_vs_pepper: fraction of the changed elements set to ``high``, in ``[0, 1]``. Defaults to 0.5.
        low: pepper value. Defaults to 0.
        high: salt value. Defaults to 1.
        uniform: the draws, ``x``'s shape, values in ``[0, 1)`` (e.g. from a MONAI transform's random state).

    Returns:
        a new tensor of ``x``'s shape and type.
    """
    _check_amount(amount, salt_vs_pepper, low, high)
    if uniform is None:
        uniform = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    elif tuple(uniform.shape) != tuple(x.shape):
        raise ValueError(f"`uniform` must have the shape of `x`, {list(x.shape)}, got {list(uniform.shape)}.")
    out = x.masked_fill(uniform < amount * (1.0 - salt_vs_pepper), low)
    return out.masked_fill_(uniform > 1.0 - amount * salt_vs_pepper, high)


class RandSaltPepperNoise(RandomizableTransform):
    """Salt-and-pepper noise (:func:`salt_and_pepper_noise`): a fraction ``amount`` of the elements is changed.

    Args:
        prob: probability of applying the transform at all. Defaults to 1.0.
        amount: total fraction of changed elements, in ``[0, 1]``; the default 0.05 (the denoising bundle's
            ``salt_pepper``) is 2.5 % salt plus 2.5 % pepper. The KAE paper's evaluation uses 0.10. Defaults to 0.05.
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
        _check_amount(amount, salt_vs_pepper, low, high)
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
        return salt_and_pepper_noise(img, self.amount, None, self.salt_vs_pepper, self.low, self.high, uniform=u)


class RandSaltPepperNoised(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandSaltPepperNoise`; all ``keys`` get the same corrupted positions.

    Args:
        keys: keys of the images to corrupt.
        prob: probability of applying the transform. Defaults to 1.0.
        amount: total fraction of changed elements (half salt, half pepper by default). Defaults to 0.05.
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
        salt_pepper: salt-and-pepper ``amount``, the total fraction of changed pixels (half salt, half pepper),
            in ``[0, 1]``.
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
    """Load one 2D single-channel image as ``(1, H, W)``; errors name ``path``.

    Raises:
        DatasetNotFoundError: no such file (also a ``FileNotFoundError``).
        DatasetReadError: the file cannot be read (also a ``RuntimeError``).
        DatasetError: not 2D, not one channel, empty or not finite (also a ``ValueError``).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected an image file path, got {type(path).__name__}.")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"image file not found: '{path}' (expected a 2D single-channel image file there).")
    loader = loader or LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)
    try:
        img = loader(path)
    except Exception as e:  # readers fail with messages that often omit the path (e.g. a truncated .gz)
        raise DatasetReadError(
            f"cannot read image file '{path}' (corrupt or not an image?): {_one_line(e)}"
        ) from e
    if img.ndim != 3:
        raise DatasetError(
            f"'{path}': expected a 2D image, got spatial shape {tuple(img.shape[1:])}; "
            "the denoising bundle works on 2D slices (save each slice as its own 2D file)."
        )
    if img.shape[0] != 1:
        raise DatasetError(f"'{path}': expected a single-channel (grayscale) image, got {img.shape[0]} channels.")
    if img.numel() == 0 or not bool(torch.isfinite(img).all()):
        raise DatasetError(f"'{path}': the image is empty or contains NaN/infinite values; expected finite values.")
    return img


class CheckedLoadImaged(LoadImaged):
    """MONAI's ``LoadImaged`` (channel first by default) whose every failure names the file and what was expected.

    Before loading, each file must exist (:class:`~monai_kan.data.msd.DatasetNotFoundError`); any reader failure
    becomes a :class:`~monai_kan.data.msd.DatasetReadError` naming the file (MONAI's own message does not name it
    when the voxels fail after the header was read, e.g. a truncated ``.nii.gz``); after loading, the channel count
    (``channels``) and the number of spatial axes (``spatial_dims``) are checked. Everything else is ``LoadImaged``.

    Args:
        keys: keys holding file paths.
        channels: expected channel count per key, e.g. ``{"image": 1, "label": 1}``; keys not in it are not checked.
        spatial_dims: expected number of spatial axes; ``None`` does not check.
        ensure_channel_first: as in ``LoadImaged``. Defaults to True (needed for the channel check).
        kwargs: the other arguments of ``monai.transforms.LoadImaged``.

    Raises:
        ValueError: ``channels`` is given with ``ensure_channel_first=False``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        channels: Optional[Mapping[str, int]] = None,
        spatial_dims: Optional[int] = None,
        ensure_channel_first: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, ensure_channel_first=ensure_channel_first, **kwargs)
        if (channels or spatial_dims) and not ensure_channel_first:
            raise ValueError("`channels` and `spatial_dims` are checked on channel-first data: keep "
                             "`ensure_channel_first=True`.")
        self.channels = dict(channels or {})
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, Any], reader=None) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if isinstance(path, (str, os.PathLike)) and not os.path.isfile(path):
                raise DatasetNotFoundError(f"{key} file {path} does not exist (the data list names it; expected an "
                                           f"image file there).")
        try:
            out = super().__call__(d, reader)
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001 - whichever reader failed, name the file
            raise self._read_error(d, reader, e) from e
        for key in self.key_iterator(out):
            self._check_loaded(key, d[key], out[key])
        return out

    def _read_error(self, d: Dict[Hashable, Any], reader, error: Exception) -> DatasetReadError:
        """The error naming the file that fails to load on its own (the first of the keys if none does)."""
        failed, cause = None, error
        for key in self.key_iterator(d):
            try:
                self._loader(d[key], reader)
            except Exception as e:  # noqa: BLE001
                failed, cause = key, e
                break
        keys = [failed] if failed is not None else list(self.key_iterator(d))
        names = ", ".join(f"{k} file {d[k]}" for k in keys)
        return DatasetReadError(f"{names} cannot be read (expected a readable image; corrupt, truncated or not an "
                                f"image?): {_one_line(cause)}")

    def _check_loaded(self, key: Hashable, path: Any, img: Any) -> None:
        shape = list(getattr(img, "shape", ()))
        if self.spatial_dims is not None and len(shape) - 1 != self.spatial_dims:
            raise DatasetError(f"{key} file {path} loads as a {len(shape) - 1}D image of shape {shape[1:]} (channel "
                               f"first: {shape}); expected a {self.spatial_dims}D image.")
        expected = self.channels.get(key)
        if expected is not None and shape and shape[0] != expected:
            raise DatasetError(f"{key} file {path} has {shape[0]} channels (channel-first shape {shape}); expected "
                               f"{expected}.")
