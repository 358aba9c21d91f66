"""Per-class segmentation metric handlers for bundle configs (one scalar per class, so logs and TensorBoard show
them and ``MetricsSaver`` writes them).

``MeanDice(include_background=False)`` averages the foreground classes; a multi-class task (organ and tumor) also
needs each class on its own. :func:`per_class_metrics` builds, for each foreground class, a Dice and an HD95 handler
that see only that class (channels ``[0, c]`` of the one-hot prediction and label).

Config use::

    "additional_metrics": "$monai_kan.handlers.per_class_metrics(@class_names, prefix='val')"
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

from monai.handlers import HausdorffDistance, MeanDice, from_engine

__all__ = ["class_output_transform", "per_class_metrics"]


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
) -> Dict[str, object]:
    """``{f"{prefix}_dice_{name}": MeanDice, f"{prefix}_hd95_{name}": HausdorffDistance}`` for each foreground class.

    Args:
        class_names: all class names, background first (``["background", "organ", "tumor"]``).
        prefix: metric name prefix.
        hd95: also add the 95th-percentile Hausdorff distance per class (in voxels of the evaluated grid).
        mean_hd95: also add ``f"{prefix}_hd95"``, the HD95 averaged over the foreground classes.
        keys: prediction and label keys of the engine output.

    Returns:
        dict of metric handlers for ``additional_metrics``.

    Raises:
        ValueError: fewer than two class names.
    """
    if len(class_names) < 2:
        raise ValueError(f"`class_names` must name the background and >= 1 class, got {list(class_names)}.")
    metrics: Dict[str, object] = {}
    if mean_hd95:
        metrics[f"{prefix}_hd95"] = HausdorffDistance(
            include_background=False, percentile=95, output_transform=from_engine(list(keys))
        )
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        transform = class_output_transform(c, keys)
        metrics[f"{prefix}_dice_{name}"] = MeanDice(include_background=False, output_transform=transform)
        if hd95:
            metrics[f"{prefix}_hd95_{name}"] = HausdorffDistance(
                include_background=False, percentile=95, output_transform=transform
            )
    return metrics
