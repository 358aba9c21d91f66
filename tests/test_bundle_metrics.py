"""Evaluation metrics of the segmentation bundles that a reader can trust (issue 10, item 1).

``evaluate.json`` scores the prediction inverted to the original image grid against the label file as stored (not
the label after the 2 mm round trip), HD95 in millimetres from the image spacing, per-class CSV columns named after
``class_names``. Checked with a perfect prediction on anisotropic (0.7 x 0.7 x 3 mm), non-RAS (flipped axes) data:
the stand-in network reads the class back from the image, which encodes the label, on the resampled grid; the
resampling is an exact refinement (half the spacing), so the inverted prediction equals the label file and any
misplaced inversion, orientation or spacing would show.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor

from helpers import ClassFromIntensity
from monai_kan.handlers import ClassNamedMetricsSaver, HausdorffDistanceMM

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {3: REPO / "bundles" / "kmunet_3d_segmentation", 2: REPO / "bundles" / "kmunet_2d_segmentation"}
SPACING = {3: (0.7, 0.7, 3.0), 2: (0.7, 3.0)}
SHAPE = {3: (26, 22, 9), 2: (30, 11)}


def _label(dims: int, shift: int) -> np.ndarray:
    """An organ (ellipsoid) with a tumor inside, off-centre so that flips and transpositions would show."""
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE[dims]], indexing="ij")
    centre = [0.4 * n + shift for n in SHAPE[dims]]
    radii = [0.3 * n for n in SHAPE[dims]]
    r = sum(((g - c) / rad) ** 2 for g, c, rad in zip(grid, centre, radii))
    lab = (r < 1).astype(np.uint8)
    lab[(r < 0.25) & (grid[0] > centre[0])] = 2
    return lab


def write_anisotropic_lps(root: Path, dims: int, n: int = 2) -> Path:
    """MSD folder of n cases at 0.7 x 0.7 x 3 mm (2D: 0.7 x 3 mm) with the first axes flipped (negative affine
    diagonal, LPS-like); the image encodes the label (0, 100, 200 HU)."""
    affine = np.eye(4)
    for i, (s, sign) in enumerate(zip(SPACING[dims], (-1, -1, 1) if dims == 3 else (-1, 1))):
        affine[i, i] = sign * s
    affine[:3, 3] = [12.0, -7.0, 30.0]
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    items = []
    for i in range(n):
        lab = _label(dims, i)
        nib.save(nib.Nifti1Image((lab * 100.0).astype(np.float32), affine), str(root / "imagesTr" / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(root / "labelsTr" / f"c{i}.nii.gz"))
        items.append({"image": f"imagesTr/c{i}.nii.gz", "label": f"labelsTr/c{i}.nii.gz"})
    labels = {"0": "background", "1": "organ", "2": "tumor"}
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "training": items, "test": items}))
    return root


def evaluate_stub(dims: int, data: Path, out: Path, pixdim) -> dict:
    """Evaluate the stand-in network with the bundle's inference.json + evaluate.json; metrics.csv as a dict."""
    ckpt = out.parent / "stub.pt"
    torch.save(ClassFromIntensity().state_dict(), ckpt)
    files = [str(BUNDLES[dims] / "configs" / f"{n}.json") for n in ("inference", "evaluate")]
    wf = ConfigWorkflow(config_file=files, workflow_type="eval", logging_file=False, bundle_root=str(BUNDLES[dims]),
                        dataset_dir=str(data), ckpt_path=str(ckpt), output_dir=str(out), eval_split="test",
                        network_def={"_target_": "helpers.ClassFromIntensity", "in_channels": 1}, pixdim=pixdim,
                        patch_size=[16] * dims, num_workers=0, progress_bar=False)
    wf.initialize()
    wf.run()
    return {row[0]: float(row[1]) for row in csv.reader(open(out / "metrics.csv"))}


@pytest.mark.parametrize("dims", [3, 2], ids=["3d", "2d"])
def test_perfect_prediction_scores_one_and_zero_mm(dims, tmp_path):
    data = write_anisotropic_lps(tmp_path / "data", dims)
    out = tmp_path / "eval"
    # a real resampling (2x finer) that is exactly invertible: the inverted prediction is the label file
    metrics = evaluate_stub(dims, data, out, [s / 2 for s in SPACING[dims]])
    assert metrics["val_mean_dice"] == pytest.approx(1.0)
    assert metrics["val_dice_organ"] == pytest.approx(1.0) and metrics["val_dice_tumor"] == pytest.approx(1.0)
    assert metrics["val_hd95"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["val_hd95_organ"] == pytest.approx(0.0, abs=1e-6)
    for name in ("val_mean_dice", "val_hd95"):
        rows = list(csv.reader(open(out / f"{name}_raw.csv")))
        assert rows[0] == ["filename", "organ", "tumor", "mean"]  # class_names, not class0/class1
        assert len(rows) == 3 and rows[1][0].endswith("c0.nii.gz")
        assert list(csv.reader(open(out / f"{name}_summary.csv")))[1][0] == "organ"


def test_the_resampling_round_trip_is_not_hidden(tmp_path):
    """A prediction made on a coarser grid (1.4 x 1.4 x 6 mm) cannot match the stored label voxel for voxel; scored
    against the label file, the round trip's loss shows in Dice and HD95 instead of cancelling out."""
    data = write_anisotropic_lps(tmp_path / "data", 3)
    metrics = evaluate_stub(3, data, tmp_path / "eval", [2 * s for s in SPACING[3]])
    assert 0.5 < metrics["val_mean_dice"] < 0.99 and metrics["val_hd95"] > 0.7


def _case(lab: np.ndarray, affine: np.ndarray) -> MetaTensor:
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(lab).long(), 3).movedim(-1, 0).float()
    return MetaTensor(one_hot, affine=torch.as_tensor(affine))


def test_hd95_is_in_millimetres_of_each_axis():
    """A prediction one voxel off along the 3 mm axis is 3 mm off, along a 0.7 mm axis 0.7 mm; MONAI's handler
    (spacing=None) says 1 voxel either way."""
    lab = _label(3, 0)
    affine = np.diag([-0.7, -0.7, 3.0, 1.0])
    results = {}
    for axis in (0, 2):
        for spacing in ("affine", None):
            engine = Engine(lambda e, b: b)
            metric = HausdorffDistanceMM(percentile=95, spacing=spacing, reduction="mean_batch")
            metric.attach(engine, "hd")
            shifted = np.roll(lab, 1, axis=axis)
            engine.run([([_case(shifted, affine)], [_case(lab, affine)])])
            results[axis, spacing] = engine.state.metrics["hd"]
    assert np.allclose(results[2, "affine"], 3.0) and np.allclose(results[0, "affine"], 0.7)
    assert np.allclose(results[2, None], 1.0) and np.allclose(results[0, None], 1.0)
    with pytest.raises(ValueError, match="needs the prediction or the label as a MetaTensor"):
        HausdorffDistanceMM(spacing="affine").update(([torch.zeros(3, 4, 4)], [torch.zeros(3, 4, 4)]))
    with pytest.raises(ValueError, match="`spacing` must be"):
        HausdorffDistanceMM(spacing="mm")


def test_metrics_saver_names_class_columns(tmp_path):
    engine = Engine(lambda e, b: b)
    engine.state.metrics = {"dice": 0.5}
    engine.state.metric_details = {"dice": torch.tensor([[0.25, 0.75]]), "one": torch.tensor([[0.5]])}
    saver = ClassNamedMetricsSaver(str(tmp_path), ["background", "organ", "tumor"], metric_details="*",
                                   summary_ops="mean")
    saver._filenames = ["case0"]
    saver(engine)
    assert (tmp_path / "dice_raw.csv").read_text().splitlines()[0] == "filename,organ,tumor,mean"
    assert (tmp_path / "one_raw.csv").read_text().splitlines()[0] == "filename,class0,mean"  # another width
    assert (tmp_path / "metrics.csv").read_text() == "dice,0.5\n"
