"""Every bundle output shows itself (issue 10, item 6).

The overlay figure (image, label when there is one, prediction) written as a PNG without replacing existing files;
the 2D bundle's inference writing one next to each prediction, with and without a label, on the original image grid
(anisotropic, axis-flipped data: the image is inverted through the preprocessing like the prediction); the
visualisation CLI taking bundle batches whose sizes are not divisible by the network's strides.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor

from helpers import ClassFromIntensity, error_chain
from monai_kan.networks import KMUNet
from monai_kan.visualize import SaveOverlayd, overlay_figure, save_overlay_png
from monai_kan.visualize.__main__ import main, pad_to_network

REPO = Path(__file__).resolve().parents[1]
BUNDLE2D = REPO / "bundles" / "kmunet_2d_segmentation"
CLASSES = ["background", "organ", "tumor"]


def _label(shape=(30, 22), shift=0) -> np.ndarray:
    """An organ (ellipse) with a tumor in it, off-centre."""
    yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    r = ((yy - 0.45 * shape[0] - shift) / (0.3 * shape[0])) ** 2 + ((xx - 0.5 * shape[1]) / (0.3 * shape[1])) ** 2
    lab = (r < 1).astype(np.uint8)
    lab[r < 0.25] = 2
    return lab


def _png(path) -> np.ndarray:
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.std() > 0.01
    return img


def test_overlay_with_and_without_label(tmp_path):
    lab = _label()[None]
    image = torch.rand(1, *lab.shape[1:]) + torch.as_tensor(lab, dtype=torch.float32)
    with_label = save_overlay_png(str(tmp_path / "with.png"), image, lab, np.roll(lab, 1, axis=1),
                                  class_names=CLASSES)
    without = save_overlay_png(str(tmp_path / "sub" / "without.png"), image, None, lab, class_names=CLASSES)
    # three panels (image, label, prediction) and two (image, prediction)
    w3, w2 = _png(with_label).shape[1], _png(without).shape[1]
    assert w3 == pytest.approx(1.5 * w2, rel=0.02)
    # one-hot predictions and 3D volumes (one slice: the largest tumor cross-section) work too
    onehot = torch.nn.functional.one_hot(torch.as_tensor(lab[0]).long(), 3).movedim(-1, 0)
    fig = overlay_figure(image, pred=onehot, class_names=CLASSES)
    assert len(fig.axes) == 2
    vol = np.zeros((1, 20, 20, 9), np.uint8)
    vol[0, 4:16, 4:16, 2:8] = 1
    vol[0, 8:12, 8:12, 6] = 2
    fig = overlay_figure(np.random.rand(1, 20, 20, 9), vol, vol, class_names=CLASSES)
    assert fig._suptitle.get_text() == "case, slice z=6"


def test_existing_png_is_not_replaced(tmp_path):
    lab = _label()[None]
    png = tmp_path / "case_overlay.png"
    png.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_overlay_png(str(png), lab, lab, lab)
    assert png.read_bytes() == b"keep me"
    # the postprocessing step refuses too, naming the file
    image = MetaTensor(torch.as_tensor(lab, dtype=torch.float32), meta={"filename_or_obj": "/data/case.nii.gz"})
    step = SaveOverlayd("pred", output_dir=str(tmp_path), class_names=CLASSES)
    with pytest.raises(FileExistsError, match="case_overlay.png"):
        step({"image": image, "pred": torch.as_tensor(lab)})
    assert png.read_bytes() == b"keep me"
    # replaced when asked to (the bundle's --overwrite true), and no temporary file left behind
    SaveOverlayd("pred", output_dir=str(tmp_path), overwrite="true")({"image": image, "pred": torch.as_tensor(lab)})
    _png(png)
    assert sorted(os.listdir(tmp_path)) == ["case_overlay.png"]


def test_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match="`label` has spatial shape"):
        overlay_figure(np.zeros((1, 8, 8)), np.zeros((1, 8, 9)))
    with pytest.raises(ValueError, match="`image` must be channel-first"):
        overlay_figure(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="`intensity_range`"):
        overlay_figure(np.zeros((1, 8, 8)), intensity_range=[1, 0])


def _anisotropic_flipped_set(root: Path) -> Path:
    """Two 2D cases at 0.7 x 3 mm, first axis flipped; the image encodes the label (0, 100, 200 HU). The test list
    gives the first case a label and the second none (inference on unlabelled data)."""
    affine = np.diag([-0.7, 3.0, 1.0, 1.0])
    affine[:3, 3] = [12.0, -7.0, 0.0]
    for sub in ("imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        lab = _label(shift=i)
        nib.save(nib.Nifti1Image((lab * 100.0).astype(np.float32), affine), str(root / "imagesTs" / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(root / "labelsTs" / f"c{i}.nii.gz"))
    test = [{"image": "imagesTs/c0.nii.gz", "label": "labelsTs/c0.nii.gz"}, {"image": "imagesTs/c1.nii.gz"}]
    labels = {"0": "background", "1": "organ", "2": "tumor"}
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "training": test[:1], "test": test}))
    return root


def test_bundle_inference_writes_overlays(tmp_path):
    data = _anisotropic_flipped_set(tmp_path / "data")
    ckpt = tmp_path / "stub.pt"
    torch.save(ClassFromIntensity().state_dict(), ckpt)
    out = tmp_path / "infer"
    kwargs = dict(config_file=str(BUNDLE2D / "configs" / "inference.json"), workflow_type="infer",
                  logging_file=False, bundle_root=str(BUNDLE2D), dataset_dir=str(data), ckpt_path=str(ckpt),
                  network_def={"_target_": "helpers.ClassFromIntensity", "in_channels": 1}, pixdim=[0.35, 1.5],
                  patch_size=[16, 16], num_workers=0, progress_bar=False)
    wf = ConfigWorkflow(output_dir=str(out), **kwargs)
    wf.initialize()
    wf.run()
    wf.finalize()
    assert sorted(os.listdir(out)) == ["c0_overlay.png", "c0_seg.nii.gz", "c1_overlay.png", "c1_seg.nii.gz"]
    # the labelled case: image, label, prediction; the unlabelled one: image, prediction
    assert _png(out / "c0_overlay.png").shape[1] == pytest.approx(1.5 * _png(out / "c1_overlay.png").shape[1],
                                                                   rel=0.02)
    # the overlay shows the prediction on the grid of the stored label (a mismatch would have raised)
    np.testing.assert_array_equal(np.asarray(nib.load(str(out / "c0_seg.nii.gz")).dataobj), _label())

    # switched off with --save_overlay false
    off = tmp_path / "infer_off"
    wf = ConfigWorkflow(output_dir=str(off), save_overlay="false", **kwargs)
    wf.initialize()
    wf.run()
    wf.finalize()
    assert sorted(os.listdir(off)) == ["c0_seg.nii.gz", "c1_seg.nii.gz"]

    # a second run over the first one's outputs is refused before anything is written
    with pytest.raises(Exception) as info:
        ConfigWorkflow(output_dir=str(out), **kwargs).initialize()
    assert "FileExistsError" in error_chain(info.value)


NET_DEF = {"_target_": "KMUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8, 8],
           "strides": [2, 2]}


def _tiny_bundle(root: Path) -> Path:
    """A bundle folder: the network, its weights, and a validation dataloader of whole images of 18 x 13 pixels
    (not divisible by the strides' product, 4)."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    torch.manual_seed(0)
    torch.save(KMUNet(2, 1, 2, channels=(4, 8, 8), strides=(2, 2)).state_dict(), root / "models" / "model.pt")
    train = {
        "imports": ["$import torch", "$import monai_kan"],
        "network_def": NET_DEF,
        "validate": {
            "dataset": "$[{'image': torch.rand(1, 18, 13)} for _ in range(2)]",
            "dataloader": {"_target_": "DataLoader", "dataset": "@validate#dataset", "batch_size": 2},
        },
    }
    (root / "configs" / "train.json").write_text(json.dumps(train))
    return root


def test_visualize_bundle_data_of_any_size(tmp_path):
    bundle = _tiny_bundle(tmp_path / "bundle")
    out = tmp_path / "splines"
    rc = main([str(bundle), "--out", str(out), "--bundle-data", "validate#dataloader", "--layers", "head.1",
               "--top-k", "2", "--kernel-pairs", "0"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["head.1"]["data"]
    # --data: the same for a saved batch
    torch.save(torch.rand(1, 1, 18, 13), tmp_path / "batch.pt")
    assert main([str(bundle), "--out", str(tmp_path / "s2"), "--data", str(tmp_path / "batch.pt"), "--layers",
                 "head.1", "--top-k", "2", "--kernel-pairs", "0"]) == 0
    # an unknown config id is named
    assert main([str(bundle), "--out", str(tmp_path / "s3"), "--bundle-data", "validate#loader"]) == 2


def test_pad_to_network_pads_edges_to_the_divisor():
    net = KMUNet(2, 1, 2, channels=(4, 8, 8), strides=(2, 2))
    x = torch.arange(2 * 18 * 13, dtype=torch.float32).reshape(2, 1, 18, 13)
    y = pad_to_network(net, x)
    assert y.shape == (2, 1, 20, 16) and type(y) is torch.Tensor
    assert y.min() == x.min() and y.max() == x.max()  # edge padding: no value outside the data
    assert pad_to_network(net, y).shape == y.shape  # divisible sizes stay as they are
