"""One MSD-folder writer, one dataset.json reader, one salt-and-pepper rule (``monai_kan.data``)."""

from __future__ import annotations

import json
import os
import stat

import nibabel as nib
import numpy as np
import pytest
import torch

from benchmarks.kae_protocol.metrics import add_salt_and_pepper_noise
from monai_kan.data import (
    DatasetError,
    DatasetNotFoundError,
    FolderExistsError,
    RandSaltPepperNoise,
    make_mni152_dataset,
    make_synthetic_dataset,
    new_msd_folder,
    read_datalist,
    salt_and_pepper_noise,
    write_phantom_dataset,
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def plain_mkdir_mode(tmp_path) -> int:
    probe = tmp_path / "probe"
    probe.mkdir()
    return mode(probe)


def leftovers(folder) -> list:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ----------------------------------------------------------------------------------------------------- writer
def test_all_generators_make_folders_like_mkdir(tmp_path):
    expected = plain_mkdir_mode(tmp_path)
    phantom = os.path.dirname(write_phantom_dataset(str(tmp_path / "ph"), 2, num_train=1, num_test=1,
                                                    shape_range=[32, 32]))
    synthetic = make_synthetic_dataset(tmp_path / "syn", num_train=1, num_test=1)
    xx, yy, _ = np.mgrid[-1:1:24j, -1:1:24j, 0:1:40j]
    template = tmp_path / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    nib.save(nib.Nifti1Image(((xx**2 + yy**2) < 0.64).astype(np.float32), np.eye(4)), str(template))
    mni = make_mni152_dataset(tmp_path / "mni", template, step=1, block=2, test_every=2)
    with new_msd_folder(tmp_path / "registry") as tmp:  # the writer of scripts/prepare_real_data.py
        open(os.path.join(tmp, "dataset.json"), "w").write("{}")
    for root in (phantom, synthetic, mni, tmp_path / "registry"):
        assert mode(root) == expected, root
        for sub in ("imagesTr", "imagesTs"):
            assert mode(os.path.join(root, sub)) == expected, (root, sub)
    assert leftovers(tmp_path) == []


def test_interrupted_write_leaves_no_target(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with new_msd_folder(tmp_path / "ds") as tmp:
            open(os.path.join(tmp, "dataset.json"), "w").write("{}")
            raise KeyboardInterrupt
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    # an existing (empty) target stays as it was
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError):
        with new_msd_folder(tmp_path / "empty"):
            raise RuntimeError("disk full")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    assert leftovers(tmp_path) == []


def test_interrupted_generator_leaves_no_target(tmp_path, monkeypatch):
    import monai_kan.data.synthetic_slices as ss

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("monai_kan.data.msd_writer.save_nifti", broken)
    with pytest.raises(OSError, match="disk full"):
        ss.make_synthetic_dataset(tmp_path / "syn", num_train=1, num_test=1)
    assert not (tmp_path / "syn").exists() and leftovers(tmp_path) == []


def test_existing_folder_is_not_overwritten_unless_asked(tmp_path):
    target = tmp_path / "ds"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(FolderExistsError, match="not an empty folder"):
        with new_msd_folder(target):
            pass
    assert (target / "keep.txt").read_text() == "user data"
    with new_msd_folder(target, overwrite=True) as tmp:
        open(os.path.join(tmp, "dataset.json"), "w").write("{}")
    assert sorted(p.name for p in target.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "labelsTs"]
    assert leftovers(tmp_path) == []
    # a generated set is regenerated when its settings change, but a folder of other data is never replaced
    syn = make_synthetic_dataset(tmp_path / "syn", num_train=1, num_test=1)
    make_synthetic_dataset(syn, num_train=2, num_test=1)
    assert json.loads((syn / "dataset.json").read_text())["numTraining"] == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "scan.nii.gz").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="other"):
        make_synthetic_dataset(tmp_path / "other", num_train=1, num_test=1)
    assert (tmp_path / "other" / "scan.nii.gz").read_bytes() == b"x"


# ----------------------------------------------------------------------------------------------------- reader
def test_read_datalist(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({
        "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz", "fold": 0}],
        "test": ["./imagesTs/b.nii.gz"], "empty": [], "strings": ["a.nii.gz"], "bad": [{"label": "x"}]}))
    assert read_datalist(tmp_path, "training") == [
        {"image": str(tmp_path / "imagesTr" / "a.nii.gz"), "label": str(tmp_path / "labelsTr" / "a.nii.gz")}]
    assert read_datalist(str(tmp_path), "test") == [{"image": str(tmp_path / "imagesTs" / "b.nii.gz")}]
    assert read_datalist(tmp_path, "empty", allow_empty=True) == []
    with pytest.raises(DatasetError, match=r"'empty' list of .*dataset.json is empty"):
        read_datalist(tmp_path, "empty")
    with pytest.raises(DatasetError, match=r"'strings' list of .*dataset.json must hold dicts"):
        read_datalist(tmp_path, "strings")
    with pytest.raises(DatasetError, match=r"entry 0 of the 'bad' list of .*dataset.json"):
        read_datalist(tmp_path, "bad")
    with pytest.raises(DatasetError, match="has no 'label' path"):
        read_datalist(tmp_path, "test", require_labels=True)
    with pytest.raises(DatasetError, match="has no 'validation' list"):
        read_datalist(tmp_path, "validation")
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(DatasetNotFoundError, match="dataset.json does not exist") as err:
        read_datalist(tmp_path / "imagesTr")
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)


# ------------------------------------------------------------------------------------------- salt-and-pepper
def test_salt_and_pepper_amount_is_the_total_fraction():
    x = torch.full((400, 500), 0.5)
    out = salt_and_pepper_noise(x, 0.10, torch.Generator().manual_seed(0))
    assert (out == 0).float().mean().item() == pytest.approx(0.05, abs=0.003)
    assert (out == 1).float().mean().item() == pytest.approx(0.05, abs=0.003)
    # the KAE paper's evaluation: prob 0.05 of pepper and 0.05 of salt is amount 0.10, draw for draw
    assert torch.equal(add_salt_and_pepper_noise(x, 0.05, torch.Generator().manual_seed(0)), out)
    # the bundle's transform: amount 0.05 changes 5 % in all
    bundle = RandSaltPepperNoise(amount=0.05).set_random_state(0)(x[None])
    assert (bundle != 0.5).float().mean().item() == pytest.approx(0.05, abs=0.003)
    assert (bundle == 1).float().mean().item() == pytest.approx(0.025, abs=0.002)
    skew = salt_and_pepper_noise(x, 0.2, torch.Generator().manual_seed(1), salt_vs_pepper=0.25, low=-1.0, high=2.0)
    assert (skew == 2.0).float().mean().item() == pytest.approx(0.05, abs=0.003)
    assert (skew == -1.0).float().mean().item() == pytest.approx(0.15, abs=0.004)
    assert torch.equal(salt_and_pepper_noise(x, 0.0), x)
    with pytest.raises(ValueError, match="amount"):
        salt_and_pepper_noise(x, 1.5)
    with pytest.raises(ValueError, match="uniform"):
        salt_and_pepper_noise(x, 0.1, uniform=torch.rand(3))
