"""MSD data lists: every bad input fails with an error that names the file, never a silent skip."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_kan.data.msd import CheckLabeld, DatasetError, check_case, load_msd_datalist, split_datalist


def _save(path, array):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), str(path))


@pytest.fixture
def dataset(tmp_path):
    """A 3-case MSD folder with 8x8x8 volumes and labels in {0, 1, 2}."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (tmp_path / sub).mkdir()
    training = []
    for i in range(3):
        _save(tmp_path / "imagesTr" / f"c{i}.nii.gz", np.random.rand(8, 8, 8).astype(np.float32))
        _save(tmp_path / "labelsTr" / f"c{i}.nii.gz", np.random.randint(0, 3, (8, 8, 8)).astype(np.uint8))
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    _save(tmp_path / "imagesTs" / "t0.nii.gz", np.random.rand(8, 8, 8).astype(np.float32))
    meta = {"labels": {"0": "background", "1": "organ", "2": "tumor"}, "training": training,
            "test": ["./imagesTs/t0.nii.gz"]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    return tmp_path


def test_reads_training_and_test(dataset):
    train = load_msd_datalist(str(dataset), "training", num_classes=3, check="full")
    assert [sorted(d) for d in train] == [["image", "label"]] * 3
    assert all(d["image"].startswith(str(dataset)) for d in train)
    test = load_msd_datalist(str(dataset), "test")
    assert test == [{"image": str(dataset / "imagesTs" / "t0.nii.gz")}]


def test_missing_folder_and_json(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_msd_datalist(str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="dataset.json does not exist"):
        load_msd_datalist(str(tmp_path))
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json is not readable JSON"):
        load_msd_datalist(str(tmp_path))


def test_empty_dataset(dataset):
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["training"] = []
    (dataset / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="'training' list of .*dataset.json is empty"):
        load_msd_datalist(str(dataset))
    with pytest.raises(DatasetError, match="has no 'validation' list"):
        load_msd_datalist(str(dataset), "validation")


def test_missing_image(dataset):
    (dataset / "imagesTr" / "c1.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"image file .*imagesTr/c1.nii.gz does not exist"):
        load_msd_datalist(str(dataset), check="exists")


def test_corrupt_image(dataset):
    (dataset / "imagesTr" / "c2.nii.gz").write_bytes(b"this is not a NIfTI file")
    with pytest.raises(DatasetError, match=r"image file .*imagesTr/c2.nii.gz cannot be read"):
        load_msd_datalist(str(dataset))


def test_truncated_label_caught_by_full_check(dataset):
    path = dataset / "labelsTr" / "c0.nii.gz"
    path.write_bytes(path.read_bytes()[:-40])  # header intact, compressed voxels cut short
    with pytest.raises(DatasetError, match=r"labelsTr/c0.nii.gz cannot be read"):
        load_msd_datalist(str(dataset), check="full", num_classes=3)


def test_shape_mismatch(dataset):
    _save(dataset / "labelsTr" / "c1.nii.gz", np.zeros((8, 8, 7), np.uint8))
    with pytest.raises(DatasetError, match=r"imagesTr/c1.nii.gz has shape \[8, 8, 8\] but its label .*c1.nii.gz"):
        load_msd_datalist(str(dataset))


def test_label_values_exceed_classes(dataset):
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[0, 0, 0] = 4
    _save(dataset / "labelsTr" / "c2.nii.gz", lab)
    load_msd_datalist(str(dataset), num_classes=3)  # header check cannot see voxel values
    with pytest.raises(DatasetError, match=r"labelsTr/c2.nii.gz holds values \[0, 4\], outside 0..2"):
        load_msd_datalist(str(dataset), num_classes=3, check="full")


def test_num_classes_disagrees_with_dataset_json(dataset):
    with pytest.raises(DatasetError, match="defines 3 labels .* num_classes=2"):
        load_msd_datalist(str(dataset), num_classes=2)


def test_entry_without_label(dataset):
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["training"][0] = {"image": meta["training"][0]["image"]}
    (dataset / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="entry 0 of the 'training' list .* has no 'label'"):
        load_msd_datalist(str(dataset))


def test_check_case_rejects_unknown_mode():
    with pytest.raises(ValueError, match="`check` must be one of"):
        check_case({"image": "x"}, check="deep")


def test_split_datalist():
    items = [{"image": str(i)} for i in range(10)]
    train, val = split_datalist(items, num_val=3)
    assert [d["image"] for d in val] == ["7", "8", "9"] and len(train) == 7
    train, val = split_datalist(items, val_fraction=0.2)
    assert len(val) == 2
    with pytest.raises(DatasetError, match="cannot keep 10 of 10"):
        split_datalist(items, num_val=10)


def test_check_labeld():
    img = MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "/d/img.nii.gz"})
    lab = MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "/d/lab.nii.gz"})
    CheckLabeld("label", num_classes=3)({"image": img, "label": lab})
    lab[0, 1, 1] = 3
    with pytest.raises(DatasetError, match=r"/d/lab.nii.gz holds values \[0, 3\], outside 0..2"):
        CheckLabeld("label", num_classes=3)({"image": img, "label": lab})
    lab = MetaTensor(torch.full((1, 4, 4), 0.5), meta={"filename_or_obj": "/d/lab.nii.gz"})
    with pytest.raises(DatasetError, match="non-integer"):
        CheckLabeld("label", num_classes=3)({"image": img, "label": lab})
    small = MetaTensor(torch.zeros(1, 4, 3), meta={"filename_or_obj": "/d/lab.nii.gz"})
    with pytest.raises(DatasetError, match=r"/d/lab.nii.gz has spatial shape \[4, 3\] but its image /d/img.nii.gz"):
        CheckLabeld("label", num_classes=3)({"image": img, "label": small})
    with pytest.raises(ValueError, match="num_classes"):
        CheckLabeld("label", num_classes=1)
