"""Segmentation metric handlers for bundle configs: distances in millimetres, one scalar per class, CSV columns named
after the classes.

* :class:`HausdorffDistanceMM`: MONAI's ``HausdorffDistance`` handler with each case's voxel spacing taken from the
  prediction's affine (the image grid), so HD95 is in millimetres also on anisotropic data (MONAI's metric accepts
  ``spacing``; its handler does not pass one and reports voxels).
* :func:`per_class_metrics`: ``MeanDice(include_background=False)`` averages the foreground classes; a multi-class
  task (organ and tumor) also needs each class on its own: a Dice and an HD95 handler per foreground class that see
  only that class (channels ``[0, c]`` of the one-hot prediction and label).
* :class:`ClassNamedMetricsSaver`: MONAI's ``MetricsSaver`` whose per-case and summary CSV files name the class
  columns (``organ``, ``tumor``) instead of ``class0``, ``class1``.

Config use::

    "additional_metrics": "$monai_kan.handlers.per_class_metrics(@class_names, prefix='val')"
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Union

import ignite.distributed as idist
import numpy as np
import torch
from monai.data.utils import affine_to_spacing
from monai.handlers import HausdorffDistance, MeanDice, MetricsSaver, from_engine
from monai.handlers.utils import write_metrics_reports
from monai.utils import MetricReduction, string_list_all_gather

__all__ = ["ClassNamedMetricsSaver", "HausdorffDistanceMM", "class_output_transform", "per_class_metrics"]


class HausdorffDistanceMM(HausdorffDistance):
    """``monai.handlers.HausdorffDistance`` in millimetres: each case's spacing from its affine.

    MONAI's ``HausdorffDistanceMetric`` takes the voxel spacing (``spacing=``) but its ignite handler never passes it,
    so distances come out in voxels, which misleads on anisotropic data (one voxel may be 0.7 mm along one axis and
    3 mm along another). Here every case is scored with the spacing of its own grid: ``affine_to_spacing`` of the
    prediction's affine (a ``MetaTensor``: the image grid the prediction lies on, e.g. the original grid after
    ``Invertd``), or of the label's if the prediction carries none. The affine's column norms are the spacing along
    the array axes, whatever the orientation (LPS, flipped axes), which is what the distance transform needs.

    Args:
        include_background, distance_metric, percentile, directed, reduction, output_transform, save_details: as in
            ``monai.handlers.HausdorffDistance``.
        spacing: ``"affine"`` (default: from the data, as above; an error if neither prediction nor label is a
            ``MetaTensor`` with an affine), a number or a sequence per spatial axis (mm, for every case), or
            ``None`` (voxels, MONAI's default).

    Raises:
        ValueError: ``spacing="affine"`` and a case without an affine (at ``update``).
    """

    def __init__(
        self,
        include_background: bool = False,
        distance_metric: str = "euclidean",
        percentile: Optional[float] = None,
        directed: bool = False,
        reduction: Union[MetricReduction, str] = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        spacing: Union[str, float, Sequence[float], None] = "affine",
    ) -> None:
        super().__init__(include_background=include_background, distance_metric=distance_metric,
                         percentile=percentile, directed=directed, reduction=reduction,
                         output_transform=output_transform, save_details=save_details)
        if isinstance(spacing, str) and spacing != "affine":
            raise ValueError(f"`spacing` must be 'affine', a number, a sequence of numbers or None, got {spacing!r}.")
        self.spacing = spacing

    @staticmethod
    def _grid_spacing(pred: Any, label: Any) -> np.ndarray:
        for item in (pred, label):
            affine = getattr(item, "affine", None)
            if isinstance(affine, torch.Tensor) and affine.ndim == 2:
                return np.asarray(affine_to_spacing(affine, r=item.ndim - 1), dtype=np.float64)
        raise ValueError("HausdorffDistanceMM(spacing='affine') needs the prediction or the label as a MetaTensor "
                         "with an affine (channel-first items); pass `spacing` in mm, or None for voxels.")

    def update(self, output: Sequence[Any]) -> None:
        """Add a batch: ``(y_pred, y)``, lists of channel-first one-hot items or batch-first tensors.

        Args:
            output: ``[y_pred, y]``.

        Raises:
            ValueError: ``output`` is not a pair; a case without an affine (``spacing="affine"``).
        """
        if len(output) != 2:
            raise ValueError(f"output must have length 2, got {len(output)}.")
        y_pred, y = output
        if self.spacing != "affine":
            self.metric_fn(y_pred, y, spacing=self.spacing)
            return
        # ignite hands over one case at a time, unsqueezed to a batch of one (its MetaTensor keeps that case's
        # affine); a collated MetaTensor batch gives each case its own affine when indexed
        preds = [y_pred[i] for i in range(len(y_pred))]
        labels = [y[i] for i in range(len(y))]
        for pred, label in zip(preds, labels):
            spacing = self._grid_spacing(pred, label)
            self.metric_fn(pred.unsqueeze(0), label.unsqueeze(0), spacing=spacing.tolist())


class ClassNamedMetricsSaver(MetricsSaver):
    """``monai.handlers.MetricsSaver`` whose CSV class columns carry the class names.

    MONAI's ``write_metrics_reports`` takes ``class_labels`` but ``MetricsSaver`` passes none, so the per-case files
    (``<metric>_raw.csv``) and summaries (``<metric>_summary.csv``) say ``class0, class1, ..., mean``. Here the
    columns of every saved metric with one value per class are named ``class_names`` (``organ, tumor, mean``); a
    metric of another width keeps MONAI's names. Everything else (files, ranks, ``metrics.csv``) is MONAI's.

    Args:
        save_dir: output folder.
        class_names: all class names, background first (``["background", "organ", "tumor"]``).
        include_background: whether the saved metrics include the background column. Defaults to False (metrics
            with ``include_background=False``, as in the bundles).
        kwargs: the other arguments of ``monai.handlers.MetricsSaver`` (``metrics``, ``metric_details``,
            ``batch_transform``, ``summary_ops``, ``save_rank``, ``delimiter``, ``output_type``).
    """

    def __init__(self, save_dir: str, class_names: Sequence[str], include_background: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(save_dir, **kwargs)
        names = [str(n) for n in class_names]
        self.class_labels = names if include_background else names[1:]
        if not self.class_labels:
            raise ValueError(f"`class_names` {list(class_names)} leave no class column to name.")

    def _wanted(self, names: Optional[Sequence[str]], items: Dict[str, Any]) -> Dict[str, Any]:
        if names is None:
            return {}
        return {k: v for k, v in items.items() if k in names or "*" in names}

    def __call__(self, engine: Any) -> None:
        """Write the CSV files (on ``save_rank``), as ``MetricsSaver`` does, with named class columns.

        Args:
            engine: the engine the saver is attached to.
        """
        world = idist.get_world_size()
        if self.save_rank >= world:
            raise ValueError("target save rank is greater than the distributed group size.")
        images = string_list_all_gather(strings=self._filenames) if world > 1 else self._filenames
        if idist.get_rank() != self.save_rank:
            return
        metrics = self._wanted(self.metrics, dict(engine.state.metrics))
        details = self._wanted(self.metric_details, dict(getattr(engine.state, "metric_details", {}) or {}))

        def width(v: Any) -> int:
            shape = tuple(getattr(v, "shape", ()))
            return shape[1] if len(shape) == 2 else 1

        named = {k: v for k, v in details.items() if width(v) == len(self.class_labels)}
        common = dict(images=images or None, summary_ops=self.summary_ops, deli=self.deli,
                      output_type=self.output_type)
        write_metrics_reports(save_dir=self.save_dir, metrics=metrics, metric_details=named,
                              class_labels=self.class_labels, **common)
        other = {k: v for k, v in details.items() if k not in named}
        if other:
            write_metrics_reports(save_dir=self.save_dir, metrics=None, metric_details=other, **common)


def class_output_transform(class_index: int, keys: Sequence[str] = ("pred", "label")) -> Callable:
    """Output transform selecting background and one class of one-hot ``pred``/``label`` (channel-first items).

    Args:
        class_index: the class channel (>= 1).
        keys: prediction and label keys of the engine output.

    Raises:
        ValueError: ``class_index`` < 1 (the background has no metric of its own).
    """
    if class_index < 1:
        raise ValueError(f"`class_index` must be >= 1 (0 is the background), got {class_index!r}.")
    pick = from_engine(list(keys))

    def transform(output):
        preds, labels = pick(output)
        return [p[[0, class_index]] for p in preds], [y[[0, class_index]] for y in labels]

    return transform


def per_class_metrics(
    class_names: Sequence[str],
    prefix: str = "val",
    hd95: bool = True,
    mean_hd95: bool = True,
    keys: Sequence[str] = ("pred", "label"),
    spacing: Union[str, float, Sequence[float], None] = "affine",
) -> Dict[str, object]:
    """``{f"{prefix}_dice_{name}": MeanDice, f"{prefix}_hd95_{name}": HausdorffDistanceMM}`` per foreground class.

    Args:
        class_names: all class names, background first (``["background", "organ", "tumor"]``).
        prefix: metric name prefix.
        hd95: also add the 95th-percentile Hausdorff distance per class, in millimetres of the grid the prediction
            lies on (:class:`HausdorffDistanceMM`; ``spacing``).
        mean_hd95: also add ``f"{prefix}_hd95"``, the HD95 averaged over the foreground classes.
        keys: prediction and label keys of the engine output.
        spacing: of the HD95 handlers (see :class:`HausdorffDistanceMM`): ``"affine"`` (default: mm, from each
            case's affine), a fixed spacing in mm, or ``None`` for voxels.

    Returns:
        dict of metric handlers for ``additional_metrics``.

    Raises:
        ValueError: fewer than two class names.
    """
    if len(class_names) < 2:
        raise ValueError(f"`class_names` must name the background and >= 1 class, got {list(class_names)}.")
    metrics: Dict[str, object] = {}
    if mean_hd95:
        metrics[f"{prefix}_hd95"] = HausdorffDistanceMM(
            include_background=False, percentile=95, output_transform=from_engine(list(keys)), spacing=spacing
        )
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        transform = class_output_transform(c, keys)
        metrics[f"{prefix}_dice_{name}"] = MeanDice(include_background=False, output_transform=transform)
        if hd95:
            metrics[f"{prefix}_hd95_{name}"] = HausdorffDistanceMM(
                include_background=False, percentile=95, output_transform=transform, spacing=spacing
            )
    return metrics
