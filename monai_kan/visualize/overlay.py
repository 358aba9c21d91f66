"""Overlay figures of a segmentation: the image, the label (when there is one) and the prediction, side by side.

One place for the picture every segmentation output comes with: :func:`overlay_figure` draws it (the colouring is
MONAI's :py:func:`monai.visualize.blend_images`), :func:`save_overlay_png` writes it without replacing an existing
file, and :class:`SaveOverlayd` is the postprocessing step that writes one PNG per case next to the predictions of
``SaveImaged`` (the 2D segmentation bundle's ``inference.json``). ``scripts/run_main_job.py`` uses
:func:`save_overlay_png` for the 3D bundle.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import create_file_basename
from monai.transforms import MapTransform
from monai.visualize import blend_images

__all__ = ["SaveOverlayd", "overlay_figure", "save_overlay_png"]

#: class 1, 2, ... colours: organ yellow and tumor red as in the 3D main job's figure, then distinct hues
DEFAULT_COLORS: Tuple[str, ...] = ("#ffd91a", "#e61a1a", "#1a8cff", "#33cc33", "#cc33cc", "#ff8000", "#00cccc")

ArrayOrPath = Union[np.ndarray, torch.Tensor, str, "os.PathLike[str]"]


def _load(value: ArrayOrPath, name: str) -> Tuple[np.ndarray, Optional[str], Optional[np.ndarray]]:
    """A channel-first float array ``(C, *spatial)``, the file it came from (None for arrays) and its spacing (from
    the affine of a file or MetaTensor, else None)."""
    path = None
    if isinstance(value, (str, os.PathLike)):
        from monai.transforms import LoadImage

        path = os.fspath(value)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`{name}`: no file {path}.")
        value = LoadImage(image_only=True, ensure_channel_first=True)(path)
    spacing = np.asarray(value.pixdim, dtype=np.float64) if isinstance(value, MetaTensor) else None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float32)
    if array.ndim not in (3, 4):
        raise ValueError(f"`{name}` must be channel-first, (C, H, W) or (C, H, W, D), got shape {array.shape}"
                         f"{f' ({path})' if path else ''}.")
    return array, path, spacing


def _label_map(array: np.ndarray) -> np.ndarray:
    """``(1, *spatial)`` class indices from a label map (one channel) or one-hot/probabilities (several)."""
    if array.shape[0] == 1:
        return np.rint(array).astype(np.int64)
    return array.argmax(0)[None].astype(np.int64)


def _slice_index(maps: Sequence[np.ndarray], depth: int) -> int:
    """Along the last axis of 3D label maps: the slice with the largest area of the highest class present in the
    first map that has any foreground (the tumor of an organ/tumor label), else the middle slice."""
    for m in maps:
        top = int(m.max())
        if top > 0:
            return int(np.argmax((m[0] == top).sum(axis=(0, 1))))
    return depth // 2


def overlay_figure(
    image: ArrayOrPath,
    label: Optional[ArrayOrPath] = None,
    pred: Optional[ArrayOrPath] = None,
    class_names: Optional[Sequence[str]] = None,
    intensity_range: Optional[Sequence[float]] = None,
    slice_index: Optional[int] = None,
    alpha: float = 0.5,
    colors: Optional[Sequence[Any]] = None,
    title: Optional[str] = None,
    pred_title: str = "prediction",
) -> Figure:
    """Panels of the image alone, the image with the label and the image with the prediction (absent panels left out).

    Arrays are shown as stored, first axis to the right and second up (``origin="lower"``, as for RAS data), pixels
    at their physical proportions when the image is a file or a ``MetaTensor`` (its affine's spacing); a 3D case
    shows one slice along the last axis. Classes are coloured by :py:func:`monai.visualize.blend_images` (the
    background stays transparent), with a legend of ``class_names``.

    Args:
        image: channel-first ``(C, H, W)`` or ``(C, H, W, D)`` array or tensor (the first channel is shown), or an
            image file readable by ``monai.transforms.LoadImage``.
        label: the reference label, same spatial shape: a label map ``(1, *spatial)``, one-hot ``(num_classes,
            *spatial)`` (argmax is taken) or a file. ``None``: no label panel (inference without labels).
        pred: the prediction, in the same forms as ``label``. ``None``: no prediction panel.
        class_names: all classes, background first, for the legend and the colour scale (default: ``class 1`` ...
            up to the largest class present).
        intensity_range: ``[low, high]`` window mapped to black..white (e.g. ``[-200, 300]`` HU); default: the 0.5 and
            99.5 percentiles of the shown slice.
        slice_index: the slice of a 3D case along the last axis; default: the largest cross-section of the highest
            class in the label (else the prediction), else the middle slice.
        alpha: opacity of the class colours.
        colors: colours of classes 1, 2, ... (matplotlib colour specs); default yellow, red, blue, green, ...
        title: figure title (a 3D case adds the slice); default the file name of ``image`` when it is a file.
        pred_title: title of the prediction panel.

    Returns:
        the figure (no pyplot state; ``fig.savefig`` works with any backend).

    Raises:
        ValueError: an array that is not channel-first 2D/3D, ``label``/``pred`` of another spatial shape than
            ``image`` (the message names both, with their files), an ``intensity_range`` that is not two increasing
            values, ``slice_index`` out of range.
        FileNotFoundError: a file that does not exist.
    """
    img, img_file, spacing = _load(image, "image")
    spatial = img.shape[1:]
    titles: List[str] = []
    maps: List[np.ndarray] = []
    for name, value, panel_title in (("label", label, "label"), ("pred", pred, pred_title)):
        if value is None:
            continue
        arr, path, _ = _load(value, name)
        if arr.shape[1:] != spatial:
            where = lambda f: f" ({f})" if f else ""  # noqa: E731
            raise ValueError(f"`{name}` has spatial shape {arr.shape[1:]}{where(path)}, `image` has {spatial}"
                             f"{where(img_file)}: they must be on the same grid.")
        titles.append(panel_title)
        maps.append(_label_map(arr))
    if intensity_range is not None and (len(intensity_range) != 2 or not intensity_range[0] < intensity_range[1]):
        raise ValueError(f"`intensity_range` must be [low, high] with low < high, got {intensity_range}.")

    shown_slice = ""
    img = img[:1]
    if img.ndim == 4:
        z = _slice_index(maps, spatial[-1]) if slice_index is None else int(slice_index)
        if not 0 <= z < spatial[-1]:
            raise ValueError(f"`slice_index` must be in [0, {spatial[-1] - 1}], got {slice_index}.")
        img, maps = img[..., z], [m[..., z] for m in maps]
        shown_slice = f", slice z={z}"
    lo, hi = intensity_range if intensity_range is not None else np.percentile(img, (0.5, 99.5))
    img = np.clip((img - lo) / max(float(hi - lo), 1e-8), 0.0, 1.0)

    top = max([int(m.max()) for m in maps] + [len(class_names) - 1 if class_names else 0, 1])
    names = list(class_names) if class_names else ["background"] + [f"class {c}" for c in range(1, top + 1)]
    names += [f"class {c}" for c in range(len(names), top + 1)]  # values beyond class_names still get a colour
    palette = list(colors) if colors else list(DEFAULT_COLORS)
    fg = [to_rgb(palette[(c - 1) % len(palette)]) for c in range(1, top + 1)]
    cmap = ListedColormap([(0.0, 0.0, 0.0)] + fg)

    # pixels drawn at their physical proportions (anisotropic data would look squashed otherwise)
    aspect = float(spacing[1] / spacing[0]) if spacing is not None and len(spacing) >= 2 and spacing[0] > 0 else 1.0
    rgbs = [np.repeat(img, 3, axis=0)]
    for m in maps:
        # class c -> c / top: blend_images maps [0, 1] onto the colormap's top + 1 entries; 0 stays transparent
        rgbs.append(blend_images(img, m.astype(np.float32) / top, alpha=alpha, cmap=cmap, rescale_arrays=False,
                                 transparent_background=True))
    fig = Figure(figsize=(4.0 * len(rgbs), 4.7))
    axes = fig.subplots(1, len(rgbs), squeeze=False)[0]
    for ax, panel_title, rgb in zip(axes, ["image"] + titles, rgbs):
        ax.imshow(np.moveaxis(np.asarray(rgb), 0, -1).transpose(1, 0, 2), origin="lower", interpolation="nearest",
                  aspect=aspect)
        ax.set_title(panel_title)
        ax.axis("off")
    fig.legend(handles=[Patch(color=fg[c - 1], label=names[c]) for c in range(1, top + 1)], loc="lower center",
               ncol=min(top, 6), frameon=False)
    if title is None:
        title = os.path.basename(img_file) if img_file else "case"
    fig.suptitle(title + shown_slice)
    fig.tight_layout(rect=(0, 0.06, 1, 0.94))
    return fig


def save_overlay_png(
    filename: str,
    image: ArrayOrPath,
    label: Optional[ArrayOrPath] = None,
    pred: Optional[ArrayOrPath] = None,
    overwrite: bool = False,
    dpi: int = 100,
    **kwargs: Any,
) -> str:
    """Write :func:`overlay_figure` as a PNG; an existing file is only replaced when ``overwrite`` is True.

    Args:
        filename: the PNG to write (its folder is created).
        image: as :func:`overlay_figure`: ``(C, H, W[, D])`` array/tensor or image file.
        label: the label, or None (no label panel).
        pred: the prediction, or None (no prediction panel).
        overwrite: replace an existing ``filename``.
        dpi: resolution.
        kwargs: further arguments of :func:`overlay_figure` (``class_names``, ``intensity_range``, ...).

    Returns:
        ``filename``.

    Raises:
        FileExistsError: ``filename`` exists and ``overwrite`` is False.
        ValueError: see :func:`overlay_figure`.
    """
    if os.path.exists(filename) and not overwrite:
        raise FileExistsError(f"{filename} exists: pass `overwrite=True` (bundles: `--overwrite true`) to replace it "
                              "or write elsewhere.")
    fig = overlay_figure(image, label, pred, **kwargs)
    folder = os.path.dirname(os.path.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    # a complete file or none: an interrupted write must not leave a truncated PNG under the final name
    tmp = os.path.join(folder, f".{os.path.basename(filename)}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, filename)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return filename


class SaveOverlayd(MapTransform):
    """Postprocessing step writing ``<output_dir>/<case>_<output_postfix>.png``: image, label (when the case has one)
    and prediction, for each key (a prediction) of a decollated case. The PNG goes next to what ``SaveImaged`` writes
    with the same ``output_dir`` (same file-name rule, MONAI's ``create_file_basename`` without separate folders).

    Place it after the prediction is discrete and on the grid it is shown on; for the bundles, after ``Invertd`` of
    both the prediction and the image (to the original image grid) and ``AsDiscreted(argmax=True)``::

        {"_target_": "monai_kan.visualize.SaveOverlayd", "keys": "pred", "image_key": "image",
         "label_key": "label_file", "output_dir": "@output_dir", "class_names": "@class_names"}

    Args:
        keys: the prediction key(s): label maps ``(1, *spatial)`` or one-hot ``(num_classes, *spatial)``.
        image_key: the image ``(C, *spatial)`` on the prediction's grid; its (or the prediction's) metadata
            ``filename_or_obj`` names the PNG.
        label_key: the label: an array on the same grid or a label file (e.g. the stored label, which is on the
            original grid); a case without it (key missing or None) gets the image and prediction only.
        output_dir: folder of the PNGs (created).
        output_postfix: appended to the case name.
        class_names: all classes, background first (legend).
        intensity_range: display window of the image (see :func:`overlay_figure`); ``[0, 1]`` for images the
            preprocessing has scaled.
        overwrite: replace existing PNGs (else a FileExistsError, never a silent replacement).
        data_root_dir: as for ``SaveImaged``: keep the folders of the input below this root in the output.
        dpi: resolution.
        allow_missing_keys: skip missing prediction keys.

    Raises:
        FileExistsError: the PNG exists and ``overwrite`` is False.
        ValueError: no ``image_key`` in the data, no file name in the metadata, or shapes that do not match.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        image_key: str = "image",
        label_key: Optional[str] = "label",
        output_dir: str = "./",
        output_postfix: str = "overlay",
        class_names: Optional[Sequence[str]] = None,
        intensity_range: Optional[Sequence[float]] = None,
        overwrite: bool = False,
        data_root_dir: str = "",
        dpi: int = 100,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        from monai_kan.handlers.bundle_utils import as_bool

        self.image_key, self.label_key = image_key, label_key
        self.output_dir, self.output_postfix, self.data_root_dir = output_dir, output_postfix, data_root_dir
        self.class_names, self.intensity_range, self.dpi = class_names, intensity_range, dpi
        self.overwrite = as_bool(overwrite, "overwrite")  # a bundle passes the string "false" from the command line

    def _case_file(self, d: Mapping[Hashable, Any], key: Hashable) -> str:
        for k in (key, self.image_key):
            meta = getattr(d.get(k), "meta", None) or {}
            name = meta.get("filename_or_obj")
            if isinstance(name, (list, tuple)):  # multi-file images: the first file names the case
                name = name[0] if name else None
            if name:
                return os.fspath(name)
        raise ValueError(f"SaveOverlayd: neither `{key}` nor `{self.image_key}` has `filename_or_obj` in its metadata "
                         "to name the PNG; load the image with LoadImaged (MetaTensor).")

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise ValueError(f"SaveOverlayd: no `image_key` {self.image_key!r} in the data (keys {list(d)}).")
        label = d.get(self.label_key) if self.label_key is not None else None
        for key in self.key_iterator(d):
            case = self._case_file(d, key)
            base = create_file_basename(self.output_postfix, case, self.output_dir, self.data_root_dir,
                                        separate_folder=False, makedirs=True)
            save_overlay_png(f"{base}.png", d[self.image_key], label, d[key], overwrite=self.overwrite, dpi=self.dpi,
                             class_names=self.class_names, intensity_range=self.intensity_range,
                             title=os.path.basename(case))
        return d
