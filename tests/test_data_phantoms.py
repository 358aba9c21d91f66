"""The synthetic organ-with-lesion phantoms: deterministic, valid labels, MSD layout, safe writing."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_kan.data.msd import load_msd_datalist
from monai_kan.data.phantoms import ensure_phantom_dataset, make_phantom, write_phantom_dataset

SMALL3 = dict(num_train=2, num_test=1, shape_range=[32, 36], spacing=2.5)
SMALL2 = dict(num_train=2, num_test=1, shape_range=[40, 48], spacing=3.0)


@pytest.mark.parametrize("shape,spacing", [((34, 36, 32), 2.5), ((44, 40), 3.0)])
def test_make_phantom_structure(shape, spacing):
    image, label = make_phantom(shape, np.random.default_rng(3), spacing)
    assert image.shape == label.shape == shape and image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 1, 2}
    # the lesion lies inside the organ: dilating organ+lesion by one voxel does not reach outside it
    organ_or_lesion = label > 0
    lesion = label == 2
    assert not (ndimage.binary_dilation(lesion) & ~organ_or_lesion).any()
    # lesion contrast against the organ is well above the noise, but the image is noisy
    organ_mean, lesion_mean = image[label == 1].mean(), image[lesion].mean()
    assert abs(lesion_mean - organ_mean) > 25
    assert image[label == 1].std() > 5


def test_make_phantom_varies_and_is_deterministic():
    a1, l1 = make_phantom((36, 36, 36), np.random.default_rng(0), 2.5)
    a2, l2 = make_phantom((36, 36, 36), np.random.default_rng(0), 2.5)
    b, lb = make_phantom((36, 36, 36), np.random.default_rng(1), 2.5)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(l1, l2)
    assert (l1 != lb).mean() > 0.01  # other seed, other shapes


def test_make_phantom_rejects_bad_args():
    with pytest.raises(ValueError, match="each >= 32"):
        make_phantom((16, 16, 16), np.random.default_rng(0))
    with pytest.raises(ValueError, match="spacing"):
        make_phantom((32, 32), np.random.default_rng(0), spacing=0)


def test_write_dataset_msd_layout_and_determinism(tmp_path):
    write_phantom_dataset(str(tmp_path / "a"), 3, **SMALL3)
    write_phantom_dataset(str(tmp_path / "b"), 3, **SMALL3)
    meta = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["numTest"] == 1
    assert meta["labels"] == {"0": "background", "1": "organ", "2": "tumor"}
    train = load_msd_datalist(str(tmp_path / "a"), "training", num_classes=3, check="full", spatial_dims=3)
    test = load_msd_datalist(str(tmp_path / "a"), "test", num_classes=3, check="full", spatial_dims=3)
    assert len(train) == 2 and len(test) == 1 and "label" in test[0]
    for item in meta["training"] + meta["test"]:
        for key in ("image", "label"):
            x = nib.load(str(tmp_path / "a" / item[key]))
            y = nib.load(str(tmp_path / "b" / item[key]))
            np.testing.assert_array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj))
            np.testing.assert_allclose(x.affine, np.diag([2.5, 2.5, 2.5, 1.0]))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_write_2d(tmp_path):
    write_phantom_dataset(str(tmp_path / "d"), 2, **SMALL2)
    items = load_msd_datalist(str(tmp_path / "d"), "training", num_classes=3, check="full", spatial_dims=2)
    img = nib.load(items[0]["image"])
    assert len(img.shape) == 2


def test_write_refuses_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("user data")
    with pytest.raises(ValueError, match="not an empty folder"):
        write_phantom_dataset(str(tmp_path / "x"), 3, **SMALL3)
    assert (tmp_path / "x" / "mine.txt").read_text() == "user data"


def test_ensure_reuses_and_detects_other_settings(tmp_path):
    root = str(tmp_path / "p")
    path = ensure_phantom_dataset(root, 2, **SMALL2)
    stamp = (tmp_path / "p" / "imagesTr" / "phantom_000.nii.gz").stat().st_mtime_ns
    assert ensure_phantom_dataset(root, 2, **SMALL2) == path  # reused, not rewritten
    assert (tmp_path / "p" / "imagesTr" / "phantom_000.nii.gz").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="differs from the requested phantom set"):
        ensure_phantom_dataset(root, 2, **{**SMALL2, "seed": 7})


def test_write_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="shape_range"):
        write_phantom_dataset(str(tmp_path / "a"), 3, num_train=1, num_test=0, shape_range=[16, 20])
    with pytest.raises(ValueError, match="num_train"):
        write_phantom_dataset(str(tmp_path / "b"), 3, num_train=0)
    with pytest.raises(ValueError, match="spatial_dims"):
        write_phantom_dataset(str(tmp_path / "c"), 4)
