"""Model-zoo-CI-style checks of the KM-UNet segmentation bundles (2D and 3D), on tiny generated phantoms.

Each bundle: train (1 short epoch, tiny patches) through ``ConfigWorkflow`` with ``check_properties() == []``, then
inference and evaluation, outputs on the input's geometry; ``verify_net_in_out``, ``ckpt_export`` (TorchScript) and
``verify_metadata`` offline; inference refusing to run without a checkpoint; resume after an interrupted run; bad
input named in the error; ``bundle_root`` from the repository root and the bundle folder, the CLI from the bundle
folder; the data preparation step.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

from monai_kan.data.phantoms import prepare_phantom_dataset, write_phantom_dataset
from helpers import error_chain

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {
    3: REPO / "bundles" / "kmunet_3d_segmentation",
    2: REPO / "bundles" / "kmunet_2d_segmentation",
}
# tiny settings: coarse phantoms, coarse resampling, small patches and channels, one epoch
TINY = {
    3: {"phantom": dict(num_train=3, num_test=1, shape_range=[32, 36], spacing=2.5), "pixdim": [5.0, 5.0, 5.0],
        "patch_size": [16, 16, 16]},
    2: {"phantom": dict(num_train=3, num_test=1, shape_range=[40, 48], spacing=3.0), "pixdim": [3.0, 3.0],
        "patch_size": [32, 32]},
}


def configs(dims: int, *names: str) -> list:
    return [str(BUNDLES[dims] / "configs" / f"{n}.json") for n in names]


def common_overrides(dims: int, dataset_dir: Path) -> dict:
    return {
        "bundle_root": str(BUNDLES[dims]),  # Python use sets it (the default comes from the current folder)
        "dataset_dir": str(dataset_dir),
        "pixdim": TINY[dims]["pixdim"],
        "patch_size": TINY[dims]["patch_size"],
        "network_def#channels": [4, 8, 8, 16],
        "num_workers": 0,
        "progress_bar": False,
    }


def train_overrides(dims: int, dataset_dir: Path, out: Path, epochs: int = 1, **extra) -> dict:
    return {
        **common_overrides(dims, dataset_dir),
        "ckpt_dir": str(out / "models"),
        "log_dir": str(out / "runs"),
        "epochs": epochs,
        "val_interval": 1,
        "num_val": 1,
        "batch_size": 1,
        "num_samples": 1,
        **extra,
    }


def run_workflow(config_file, workflow_type: str, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=config_file, workflow_type=workflow_type, logging_file=False, **override)
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    return wf


@pytest.fixture(scope="module", params=[3, 2], ids=["3d", "2d"])
def trained(request, tmp_path_factory):
    """A tiny phantom set and a bundle trained on it for one epoch: (dims, dataset_dir, out_dir)."""
    dims = request.param
    root = tmp_path_factory.mktemp(f"bundle{dims}d")
    data = root / "data"
    write_phantom_dataset(str(data), dims, **TINY[dims]["phantom"])
    wf = run_workflow(configs(dims, "train"), "train", **train_overrides(dims, data, root))
    assert wf.trainer.state.epoch == 1
    return dims, data, root


def test_train_outputs(trained):
    dims, _, root = trained
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # a plain state_dict, CPU-loadable
    last = torch.load(root / "models" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "best_model"} <= set(last)
    assert last["trainer"]["iteration"] == last["trainer"]["epoch_length"]  # one full epoch
    (score, _), = last["best_model"]["_saved"]  # the best score, for a resumed run to compare against
    assert 0.0 <= score <= 1.0
    assert any((root / "runs").iterdir())  # TensorBoard events
    assert not [p for p in (root / "models").iterdir() if ".tmp-" in p.name]  # no temp files left


def test_inference_geometry(trained):
    dims, data, root = trained
    out = root / "infer"
    run_workflow(configs(dims, "inference"), "infer", **common_overrides(dims, data), ckpt_path=str(root / "models" /
                 "model.pt"), output_dir=str(out))
    test_items = json.loads((data / "dataset.json").read_text())["test"]
    assert test_items
    for item in test_items:
        src = nib.load(str(data / item["image"]))
        name = Path(item["image"]).name.replace(".nii.gz", "_seg.nii.gz")
        pred = nib.load(str(out / name))
        assert pred.shape[:dims] == src.shape[:dims]
        np.testing.assert_allclose(pred.affine, src.affine, atol=1e-4)
        values = np.unique(np.asarray(pred.dataobj))
        assert set(values.tolist()) <= {0, 1, 2}


def test_inference_refuses_to_overwrite(trained):
    dims, data, root = trained
    out = root / "infer_again"
    out.mkdir()
    (out / "old_seg.nii.gz").write_bytes(b"keep me")
    with pytest.raises(Exception) as info:
        ConfigWorkflow(config_file=configs(dims, "inference"), workflow_type="infer", logging_file=False,
                       **common_overrides(dims, data), ckpt_path=str(root / "models" / "model.pt"),
                       output_dir=str(out)).initialize()
    assert "FileExistsError" in error_chain(info.value) and "--overwrite true" in error_chain(info.value)
    assert (out / "old_seg.nii.gz").read_bytes() == b"keep me"


def test_evaluate_writes_csv(trained):
    dims, data, root = trained
    out = root / "evaluation"
    run_workflow(configs(dims, "inference", "evaluate"), "eval", **common_overrides(dims, data),
                 ckpt_path=str(root / "models" / "model.pt"), output_dir=str(out), eval_split="test")
    with open(out / "val_mean_dice_raw.csv") as f:
        rows = list(csv.reader(f, delimiter=","))
    assert len(rows) == 1 + 1  # header + one test case
    assert rows[0][0] == "filename" and "phantom_003" in rows[1][0]
    assert (out / "val_hd95_raw.csv").is_file()
    assert (out / "metrics.csv").is_file()
    summary = (out / "metrics.csv").read_text()
    assert "val_dice_organ" in summary and "val_dice_tumor" in summary
    # the default split: the validation cases of training (the last `num_val` of the training list)
    out_val = root / "evaluation_val"
    run_workflow(configs(dims, "inference", "evaluate"), "eval", **common_overrides(dims, data),
                 ckpt_path=str(root / "models" / "model.pt"), output_dir=str(out_val), num_val=1)
    rows = (out_val / "val_mean_dice_raw.csv").read_text().splitlines()
    assert len(rows) == 2 and "phantom_002" in rows[1]


def test_inference_without_checkpoint_fails(trained, tmp_path):
    dims, data, _ = trained
    wf = ConfigWorkflow(config_file=configs(dims, "inference"), workflow_type="infer", logging_file=False,
                        **common_overrides(dims, data), ckpt_path=str(tmp_path / "missing.pt"),
                        output_dir=str(tmp_path / "out"))
    with pytest.raises(Exception) as info:
        wf.initialize()
    assert "FileNotFoundError: no trained model" in error_chain(info.value)
    assert not (tmp_path / "out").exists()


def test_resume_after_interruption(trained, tmp_path):
    dims, data, root = trained
    out = tmp_path / "run"
    (out / "models").mkdir(parents=True)
    # the 1-epoch run of the fixture plays the interrupted run: copy its state
    for name in ("model.pt", "checkpoint_last.pt"):
        (out / "models" / name).write_bytes((root / "models" / name).read_bytes())
    with pytest.raises(Exception) as info:
        ConfigWorkflow(config_file=configs(dims, "train"), workflow_type="train", logging_file=False,
                       **train_overrides(dims, data, out, epochs=2)).initialize()
    assert "FileExistsError" in error_chain(info.value) and "--resume true" in error_chain(info.value)
    wf = run_workflow(configs(dims, "train"), "train", **train_overrides(dims, data, out, epochs=2, resume=True))
    trainer = wf.trainer
    assert trainer.state.epoch == 2
    assert trainer.state.iteration == 2 * trainer.state.epoch_length  # epoch 1 was not run again
    last = torch.load(out / "models" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert last["trainer"]["iteration"] == 2 * last["trainer"]["epoch_length"]
    # more epochs than the checkpoint's: the cosine restarts from the rate reached (eta_min after the finished
    # 1-epoch run) over the 1 remaining epoch instead of climbing back up with the checkpoint's T_max
    assert last["lr_scheduler"]["T_max"] == 1 and last["lr_scheduler"]["last_epoch"] == 1
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.003 * 0.05)


def test_bad_label_names_file(tmp_path):
    dims = 3
    data = tmp_path / "data"
    write_phantom_dataset(str(data), dims, **TINY[dims]["phantom"])
    bad = data / "labelsTr" / "phantom_001.nii.gz"
    img = nib.load(str(bad))
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 5  # a class that does not exist
    nib.save(nib.Nifti1Image(arr, img.affine), str(bad))
    wf = ConfigWorkflow(config_file=configs(dims, "train"), workflow_type="train", logging_file=False,
                        **train_overrides(dims, data, tmp_path))
    wf.initialize()
    with pytest.raises(Exception) as info:
        wf.run()
    chain = error_chain(info.value)
    assert "DatasetError: label" in chain and "phantom_001.nii.gz holds values" in chain and "outside 0..2" in chain
    # the up-front check names it before anything is loaded
    wf = ConfigWorkflow(config_file=configs(dims, "train"), workflow_type="train", logging_file=False,
                        **train_overrides(dims, data, tmp_path / "b", data_check="full"))
    wf.initialize()
    with pytest.raises(Exception) as info:
        wf.train_dataset_data
    assert "DatasetError: label" in error_chain(info.value) and "phantom_001.nii.gz" in error_chain(info.value)


def test_missing_image_names_file(tmp_path):
    dims = 2
    data = tmp_path / "data"
    write_phantom_dataset(str(data), dims, **TINY[dims]["phantom"])
    (data / "imagesTr" / "phantom_002.nii.gz").unlink()
    wf = ConfigWorkflow(config_file=configs(dims, "train"), workflow_type="train", logging_file=False,
                        **train_overrides(dims, data, tmp_path))
    wf.initialize()
    with pytest.raises(Exception) as info:
        wf.run()
    assert "DatasetNotFoundError: image file" in error_chain(info.value)
    assert "phantom_002.nii.gz does not exist" in error_chain(info.value)


@pytest.mark.parametrize("dims", [3, 2], ids=["3d", "2d"])
def test_verify_net_in_out_and_metadata(dims):
    meta = str(BUNDLES[dims] / "configs" / "metadata.json")
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=configs(dims, "train"), device="cpu", n=2)
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=configs(dims, "inference"), device="cpu", n=2)
    import jsonschema  # noqa: F401  (the test extra; verify_metadata needs it)
    verify_metadata(meta_file=meta, filepath=str(REPO / "bundles" / "metadata_schema.json"))


@pytest.mark.parametrize("dims", [3, 2], ids=["3d", "2d"])
def test_ckpt_export_torchscript(dims, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(configs(dims, "inference"))
    parser["bundle_root"] = str(BUNDLES[dims])
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), tmp_path / "model.pt")
    ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(tmp_path / "model.pt"),
                meta_file=str(BUNDLES[dims] / "configs" / "metadata.json"), config_file=configs(dims, "inference"),
                bundle_root=str(BUNDLES[dims]))
    scripted = torch.jit.load(str(tmp_path / "model.ts"), map_location="cpu")
    x = torch.rand((1, 1) + (16,) * dims)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("trained", [3], indirect=True, ids=["3d"])
def test_cli_inference_from_bundle_folder(trained, tmp_path):
    """``python -m monai.bundle run`` from the bundle folder: ``bundle_root`` is the bundle, outputs as asked."""
    dims, data, root = trained
    out = tmp_path / "cli_out"
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
            "--dataset_dir", str(data), "--ckpt_path", str(root / "models" / "model.pt"), "--output_dir", str(out),
            "--pixdim", str(TINY[dims]["pixdim"]), "--patch_size", str(TINY[dims]["patch_size"]),
            "--network_def#channels", "[4,8,8,16]", "--num_workers", "0", "--progress_bar", "false"]
    env = {**os.environ, "MONAI_KAN_FUSED": "0"}
    res = subprocess.run(args, cwd=BUNDLES[dims], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["phantom_003_seg.nii.gz"]


@pytest.mark.parametrize("dims", [3, 2], ids=["3d", "2d"])
@pytest.mark.parametrize("from_bundle", [False, True], ids=["repo_root", "bundle_folder"])
@pytest.mark.parametrize("names, workflow_type", [(("train",), "train"), (("inference",), "infer"),
                                                  (("inference", "evaluate"), "eval")])
def test_bundle_root_defaults_to_the_bundle_folder(dims, from_bundle, names, workflow_type, monkeypatch):
    monkeypatch.chdir(BUNDLES[dims] if from_bundle else REPO)
    files = [f"configs/{n}.json" for n in names] if from_bundle else configs(dims, *names)
    # no `initialize` expressions: they would check or load the bundle's own (absent) checkpoints and data
    wf = ConfigWorkflow(config_file=files, workflow_type=workflow_type, logging_file=False, init_id="skip")
    wf.initialize()
    assert Path(wf.bundle_root) == BUNDLES[dims]
    assert Path(wf.parser.get_parsed_content("default_dataset_dir")).parent.parent == BUNDLES[dims]
    wf = ConfigWorkflow(config_file=files, workflow_type=workflow_type, logging_file=False, init_id="skip",
                        bundle_root="/elsewhere")
    wf.initialize()
    assert wf.bundle_root == "/elsewhere"  # an override always wins


def test_prepare_phantom_dataset(tmp_path):
    default = tmp_path / "bundle" / "data" / "phantom2d"
    small = dict(num_train=2, num_test=1, shape_range=[32, 36], spacing=3.0)
    path = prepare_phantom_dataset(str(default), str(default), 2, **small)  # the default folder: generated once
    assert path == str(default / "dataset.json") and (default / "imagesTr").is_dir()
    stamp = os.path.getmtime(path)
    assert prepare_phantom_dataset(str(default) + "/", str(default), 2, **small) == path  # then reused
    assert os.path.getmtime(path) == stamp
    with pytest.raises(ValueError, match="differs from the requested phantom set"):
        prepare_phantom_dataset(str(default), str(default), 2, **{**small, "seed": 3})
    # a user folder: checked, never written
    mine = tmp_path / "Task99_Mine"
    with pytest.raises(FileNotFoundError, match=r"`dataset_dir` .*Task99_Mine does not exist: .*Decathlon layout.*"
                                                r"prepare_real_data.py.*leave `--dataset_dir` out"):
        prepare_phantom_dataset(str(mine), str(default), 2, **small)
    assert not mine.exists()
    mine.mkdir()
    with pytest.raises(FileNotFoundError, match="Task99_Mine has no dataset.json"):
        prepare_phantom_dataset(str(mine), str(default), 2, **small)
    assert list(mine.iterdir()) == []
    (mine / "dataset.json").write_text("{}")
    assert prepare_phantom_dataset(str(mine), str(default), 2) == str(mine / "dataset.json")
