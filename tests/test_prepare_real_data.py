"""scripts/prepare_real_data.py on fabricated registry files (no network): the pyradiomics source distribution and
the nilearn wheel are built here with the layout the real ones have, then converted to MSD folders."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("prepare_real_data")


def _fake_sdist(script, tmp_path: Path) -> Path:
    import SimpleITK as sitk

    top = tmp_path / "src" / "pyradiomics-3.0.1"
    (top / "data").mkdir(parents=True)
    (top / "LICENSE.txt").write_text("BSD 3-clause (test copy)")
    rng = np.random.default_rng(0)
    for i, case in enumerate(script.PYRADIOMICS_CASES):
        image = rng.normal(100.0 * (i + 1), 20.0, (6, 8, 10)).astype(np.float32)  # another range per case
        label = np.zeros((6, 8, 10), np.uint8)
        label[2:4, 3:6, 4:7] = 1 + i % 2  # pyradiomics labels are not all 1: anything > 0 is tumor
        for array, kind in ((image, "image"), (label, "label")):
            out = sitk.GetImageFromArray(array)
            out.SetSpacing((0.5, 0.7, 2.0))
            sitk.WriteImage(out, str(top / "data" / f"{case}_{kind}.nrrd"))
    sdist = tmp_path / "pyradiomics-3.0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return sdist


def test_pyradiomics_conversion(script, tmp_path):
    sdist = _fake_sdist(script, tmp_path)
    out = tmp_path / "pyradiomics_3d"
    path = script.convert_pyradiomics(str(out), str(sdist))
    meta = json.loads(Path(path).read_text())
    assert meta["numTraining"] == 4 and [t["image"] for t in meta["test"]] == ["./imagesTs/brain2.nii.gz"]
    assert meta["labels"] == {"0": "background", "1": "tumor"} and (out / "LICENSE.txt").is_file()
    assert not (out / "_src").exists()
    image = nib.load(str(out / "imagesTr" / "lung1.nii.gz"))
    label = np.asarray(nib.load(str(out / "labelsTr" / "lung1.nii.gz")).dataobj)
    volume = image.get_fdata()
    assert volume.min() == 0.0 and volume.max() == pytest.approx(1000.0)  # rescaled per case, clipped
    assert sorted(np.unique(label).tolist()) == [0, 1] and label.sum() == 2 * 3 * 3
    np.testing.assert_allclose(image.header.get_zooms(), (0.5, 0.7, 2.0))  # geometry kept
    args = json.loads((out / "bundle_args.json").read_text())
    assert args["dataset_dir"] == str(out) and args["class_names"] == ["background", "tumor"]
    assert args["num_val"] == 1 and args["intensity_range"] == [0, 1000]
    with pytest.raises(FileExistsError, match="--overwrite"):
        script.convert_pyradiomics(str(out), str(sdist))
    script.convert_pyradiomics(str(out), str(sdist), test_cases=("lung2",), overwrite=True)
    assert (out / "imagesTs" / "lung2.nii.gz").is_file() and not (out / "imagesTs" / "brain2.nii.gz").exists()
    with pytest.raises(ValueError, match="test_cases"):
        script.convert_pyradiomics(str(tmp_path / "x"), str(sdist), test_cases=script.PYRADIOMICS_CASES)


def _fake_nilearn_wheel(script, tmp_path: Path, depth: int = 48) -> Path:
    """A 'wheel' with the three template files: a head of 20x20x``depth`` voxels, white matter inside gray."""
    xx, yy, zz = np.meshgrid(*(np.linspace(-1, 1, n) for n in (20, 20, depth)), indexing="ij")
    r = np.sqrt(xx**2 + yy**2 + zz**2)
    t1 = np.where(r < 0.95, 80.0 + 40.0 * (r < 0.5), 0.0).astype(np.float32)
    wm = np.where(r < 0.5, 255.0, 0.0).astype(np.float32)  # probabilities stored as 0..255
    gm = np.where((r >= 0.5) & (r < 0.9), 255.0, 0.0).astype(np.float32)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-10.0, -10.0, -20.0)
    wheel = tmp_path / "nilearn-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for key, volume in (("t1", t1), ("gm", gm), ("wm", wm)):
            file = tmp_path / Path(script.NILEARN_MNI_FILES[key]).name
            nib.save(nib.Nifti1Image(volume, affine), str(file))
            zf.write(file, script.NILEARN_MNI_FILES[key])
    return wheel


def test_mni152_conversion_3d_slabs(script, tmp_path):
    wheel = _fake_nilearn_wheel(script, tmp_path)
    out = tmp_path / "mni152_3d"
    meta = json.loads(Path(script.convert_mni152(str(out), str(wheel), 3, slab_thickness=4)).read_text())
    assert meta["numTest"] == 2 and meta["numTraining"] >= 4 and meta["tensorImageSize"] == "3D"
    for item in meta["training"] + meta["test"]:
        img = nib.load(str(out / item["image"]))
        lab = np.asarray(nib.load(str(out / item["label"])).dataobj)
        assert img.shape == (20, 20, 4) and set(np.unique(lab).tolist()) <= {0, 1, 2} and lab.any()
        start = int(item["image"].split("slab")[1][:3])
        assert img.affine[2, 3] == pytest.approx(-20.0 + start)  # the slab sits where it was cut
    args = json.loads((out / "bundle_args.json").read_text())
    assert args["class_names"] == ["background", "white_matter", "gray_matter"]
    assert args["patch_size"] == [32, 32, 4]


def test_mni152_conversion_2d_slices_keep_a_guard_gap(script, tmp_path):
    wheel = _fake_nilearn_wheel(script, tmp_path)
    out = tmp_path / "mni152_2d"
    meta = json.loads(Path(script.convert_mni152(str(out), str(wheel), 2, slice_step=1)).read_text())
    z = {split: [int(item["image"].split("_z")[1][:3]) for item in meta[split]] for split in ("training", "test")}
    assert z["training"] and z["test"] and not set(z["training"]) & set(z["test"])
    assert min(abs(a - b) for a in z["training"] for b in z["test"]) >= 3  # 2 slices left out on each side
    assert nib.load(str(out / meta["test"][0]["image"])).shape == (20, 20)
    with pytest.raises(ValueError, match="spatial_dims"):
        script.convert_mni152(str(tmp_path / "x"), str(wheel), 4)


def test_pip_download_reuses_a_downloaded_file(script, tmp_path, monkeypatch):
    (tmp_path / "nilearn-0.14.1-py3-none-any.whl").write_bytes(b"")
    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    assert script.pip_download("nilearn", str(tmp_path)) == str(tmp_path / "nilearn-0.14.1-py3-none-any.whl")


def test_rescale_intensity(script):
    image = np.concatenate([np.zeros(10), np.linspace(1.0, 2.0, 1001)])  # zeros (background) are not counted
    out = script.rescale_intensity(image)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1000.0
    assert out[10 + 500] == pytest.approx(500.0, abs=1e-3)
    with pytest.raises(ValueError, match="constant"):
        script.rescale_intensity(np.full(5, 3.0))
