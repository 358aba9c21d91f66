"""Data errors end every bundle with one line naming the file and what was expected, and exit status 1 (issue 10,
item 3).

* In-process (``ConfigWorkflow``): each kind of bad data (missing, truncated with an intact header, unreadable,
  wrong channel count, label out of range, image/label shape mismatch) in both segmentation bundles raises a
  :class:`DatasetError` that :func:`data_error_message` finds in MONAI's wrapping and turns into one line.
* On the command line (``python -m monai.bundle run``, run side by side to keep the time down): the last line of the
  output is that message and the exit status is 1, for each way an error travels: wrapped by MONAI (a CacheDataset's
  threads with persistent DataLoader workers around), from a DataLoader worker process (which passes on only text),
  and from the KAE denoising bundle's own loader.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from monai_kan import KMUNet
from monai_kan.data import DatasetError, DatasetNotFoundError, DatasetReadError
from monai_kan.data.phantoms import write_phantom_dataset
from monai_kan.data.synthetic_slices import make_synthetic_dataset
from monai_kan.data.transforms import CheckedLoadImaged
from monai_kan.handlers import data_error_message

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {3: REPO / "bundles" / "kmunet_3d_segmentation", 2: REPO / "bundles" / "kmunet_2d_segmentation"}
KAE = REPO / "bundles" / "kae_denoising"
PHANTOM = {3: dict(num_train=3, num_test=1, shape_range=[32, 36], spacing=2.5),
           2: dict(num_train=3, num_test=1, shape_range=[40, 48], spacing=3.0)}
SMALL = {3: {"pixdim": [5.0, 5.0, 5.0], "patch_size": [16, 16, 16]}, 2: {"pixdim": [3.0, 3.0], "patch_size": [32, 32]}}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One tiny phantom set per dimension and one tiny KAE slice set, copied and spoilt by each test."""
    root = tmp_path_factory.mktemp("clean")
    for dims in (2, 3):
        write_phantom_dataset(str(root / f"d{dims}"), dims, **PHANTOM[dims])
    make_synthetic_dataset(root / "kae", 4, 1, 0)
    return root


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, compressed voxels cut short


def _rewrite(path: Path, change) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(change(np.asarray(img.dataobj).copy()), img.affine), str(path))


def _out_of_range(a):
    a[(0,) * a.ndim] = 5
    return a


def spoil(kind: str, data: Path, split: str = "Tr", case: str = "phantom_001.nii.gz") -> tuple:
    """Spoil one case of `data`; returns (the file the message must name, a phrase of what was expected)."""
    image, label = data / f"images{split}" / case, data / f"labels{split}" / case
    if kind == "missing":
        image.unlink()
        return image, "does not exist"
    if kind == "truncated":
        _truncate(image)
        return image, "cannot be read"
    if kind == "unreadable":
        image.write_bytes(b"this is not a NIfTI file")
        return image, "cannot be read"
    if kind == "channels":
        _rewrite(image, lambda a: np.stack([a, a], axis=-1))
        return image, "has 2 channels"
    if kind == "label_values":
        _rewrite(label, _out_of_range)
        return label, "outside 0..2"
    if kind == "shape":
        _rewrite(label, lambda a: a[:-2])
        return label, "must cover the same voxels"
    raise ValueError(kind)


def _seg_overrides(dims: int, data: Path, out: Path) -> dict:
    return {"bundle_root": str(BUNDLES[dims]), "dataset_dir": str(data), "ckpt_dir": str(out / "models"),
            "log_dir": str(out / "runs"), "network_def#channels": [4, 8, 8, 16], "num_workers": 0,
            "progress_bar": False, "epochs": 1, "num_val": 1, **SMALL[dims]}


KINDS = ["missing", "truncated", "unreadable", "channels", "label_values", "shape"]


@pytest.mark.parametrize("dims", [3, 2], ids=["3d", "2d"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_data_error_is_one_line_naming_the_file(dims, kind, clean, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clean / f"d{dims}", data)
    path, expected = spoil(kind, data)
    wf = ConfigWorkflow(config_file=str(BUNDLES[dims] / "configs" / "train.json"), workflow_type="train",
                        logging_file=False, **_seg_overrides(dims, data, tmp_path))
    with pytest.raises(Exception) as info:
        wf.initialize()
        wf.run()
    message = data_error_message(info.value)
    assert message is not None, info.value
    assert "\n" not in message and str(path) in message, message
    if kind == "channels" and dims == 2:  # [H, W, 2] is a volume to MONAI's NIfTI reader: said so, before loading
        expected = "which loads as a 3D image; expected a 2D image"
    elif kind == "channels":  # the header check, before any voxel is loaded
        expected = "expected 1 channel (the network's in_channels=1)"
    assert expected in message, message


def test_header_check_of_channels_and_dimensions(clean, tmp_path):
    from monai_kan.data.msd import load_msd_datalist

    data = tmp_path / "data"
    shutil.copytree(clean / "d3", data)
    spoil("channels", data)
    with pytest.raises(DatasetError, match=r"phantom_001.nii.gz has 2 channels .*expected 1 channel"):
        load_msd_datalist(str(data), "training", spatial_dims=3, in_channels=1)
    load_msd_datalist(str(data), "training", spatial_dims=3)  # not asked: not checked
    with pytest.raises(DatasetError, match=r"phantom_000.nii.gz has 1 channels .*expected 2 channels"):
        load_msd_datalist(str(data), "training", spatial_dims=3, in_channels=2)
    label = data / "labelsTr" / "phantom_002.nii.gz"
    _rewrite(label, lambda a: np.stack([a, a], axis=-1))
    with pytest.raises(DatasetError, match=r"label file .*phantom_002.nii.gz has 2 channels .*single-channel label"):
        load_msd_datalist(str(data), "training", spatial_dims=3)
    flat = tmp_path / "flat"
    shutil.copytree(clean / "d2", flat)
    _rewrite(flat / "imagesTr" / "phantom_000.nii.gz", lambda a: a[..., None])  # [H, W, 1]: a volume to MONAI
    with pytest.raises(DatasetError, match=r"phantom_000.nii.gz has shape \[\d+, \d+, 1\], which loads as a 3D image; "
                                           r"expected a 2D image"):
        load_msd_datalist(str(flat), "training", spatial_dims=2)


def test_checked_load_imaged_names_the_file(clean, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clean / "d3", data)
    item = {"image": str(data / "imagesTr" / "phantom_000.nii.gz"),
            "label": str(data / "labelsTr" / "phantom_000.nii.gz")}
    load = CheckedLoadImaged(["image", "label"], channels={"image": 1, "label": 1}, spatial_dims=3)
    out = load(item)
    assert out["image"].shape[0] == 1 and out["label"].shape == out["image"].shape
    _truncate(Path(item["label"]))  # the image loads, the label does not: the label is named
    with pytest.raises(DatasetReadError, match=r"^label file .*labelsTr/phantom_000.nii.gz cannot be read .*EOFError"):
        load(item)
    with pytest.raises(DatasetNotFoundError, match=r"image file .*nope.nii.gz does not exist"):
        load({**item, "image": str(data / "nope.nii.gz")})
    with pytest.raises(DatasetError, match=r"image file .*phantom_000.nii.gz has 1 channels .*expected 2"):
        CheckedLoadImaged("image", channels={"image": 2})(item)
    with pytest.raises(DatasetError, match=r"loads as a 3D image .*expected a 2D image"):
        CheckedLoadImaged("image", spatial_dims=2)(item)
    with pytest.raises(ValueError, match="ensure_channel_first"):
        CheckedLoadImaged("image", channels={"image": 1}, ensure_channel_first=False)


def test_data_error_message_walks_the_chain_and_worker_text():
    try:
        try:
            raise DatasetError("label /d/x.nii.gz holds values [0, 5], outside 0..2;\nfix it.")
        except DatasetError as e:
            raise RuntimeError("applying transform <CheckLabeld>") from e
    except RuntimeError as wrapped:
        try:
            raise RuntimeError("Failed to instantiate component 'monai.data.dataset.CacheDataset'") from wrapped
        except RuntimeError as outer:
            expected = "DatasetError: label /d/x.nii.gz holds values [0, 5], outside 0..2; fix it."
            assert data_error_message(outer) == expected
    worker = RuntimeError("Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                          "last):\n  File ...\nmonai_kan.data.msd.DatasetReadError: image file /d/y.nii.gz cannot be "
                          "read (expected a readable image): EOFError: cut\n\nThe above exception was the direct cause")
    assert data_error_message(worker) == ("DatasetReadError: image file /d/y.nii.gz cannot be read (expected a "
                                          "readable image): EOFError: cut")
    assert data_error_message(ValueError("something else")) is None and data_error_message(None) is None


# ------------------------------------------------------------------------------------------------ the command line
def _cli(config_files, args) -> list:
    files = config_files[0] if len(config_files) == 1 else "[" + ",".join(f"'{f}'" for f in config_files) + "]"
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", files,
            *[str(a) for pair in args.items() for a in pair]]


def test_cli_ends_with_the_message_and_exit_status_1(clean, tmp_path):
    runs = {}

    def seg(name, dims, kind, configs=("train",), split="Tr", case="phantom_001.nii.gz", **extra):
        data = tmp_path / name / "data"
        shutil.copytree(clean / f"d{dims}", data)
        path, expected = spoil(kind, data, split, case)
        args = {"--bundle_root": BUNDLES[dims], "--dataset_dir": data, "--network_def#channels": "[4,8,8,16]",
                "--progress_bar": "false", "--pixdim": str(SMALL[dims]["pixdim"]),
                "--patch_size": str(SMALL[dims]["patch_size"]), **extra}
        if "train" in configs:
            args.update({"--ckpt_dir": tmp_path / name / "models", "--log_dir": tmp_path / name / "runs",
                         "--epochs": 1, "--num_val": 1})
        runs[name] = ([str(BUNDLES[dims] / "configs" / f"{c}.json") for c in configs], args, path, expected)

    # a CacheDataset's threads (the header checks and transforms raise in this process too: the in-process test
    # above covers their messages; the way to the last line is the same)
    seg("truncated_3d", 3, "truncated", **{"--num_workers": 2})
    # a DataLoader worker process (inference reads the test images in 2 workers): only its text comes back
    ckpt = tmp_path / "kmunet3d.pt"
    torch.save(KMUNet(3, 1, 3, channels=(4, 8, 8, 16), strides=(2, 2, 2)).state_dict(), ckpt)
    seg("worker_3d", 3, "truncated", configs=("inference",), split="Ts", case="phantom_003.nii.gz",
        **{"--ckpt_path": ckpt, "--output_dir": tmp_path / "worker_out", "--num_workers": 2})
    # the KAE denoising bundle's loader
    kae = tmp_path / "kae" / "data"
    shutil.copytree(clean / "kae", kae)
    bad = kae / "imagesTr" / "synthetic_001.nii.gz"
    _truncate(bad)
    runs["kae"] = ([str(KAE / "configs" / "train.json")],
                   {"--bundle_root": tmp_path / "kae", "--dataset_dir": kae, "--num_val": 1, "--roi_size": "[32,32]",
                    "--epochs": 1}, bad, "cannot read image file")

    env = {**os.environ, "MONAI_KAN_FUSED": "0", "OMP_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen(_cli(files, args), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
             for name, (files, args, _, _) in runs.items()}
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=300)
        _, _, path, expected = runs[name]
        last = output.rstrip("\n").splitlines()[-1]
        assert proc.returncode == 1, f"{name}: exit {proc.returncode}\n{output[-3000:]}"
        assert last.startswith("Dataset") and str(path) in last and expected in last, f"{name}: {last}"
        assert "terminate called" not in output
