"""Model-zoo-CI-style checks of the KAE denoising bundle (``bundles/kae_denoising``) on tiny synthetic slices.

Train (1 short epoch) through ``ConfigWorkflow`` with ``check_properties() == []``, resume, evaluation to CSV,
inference writing NIfTI and PNG on the input's geometry, refusal without a checkpoint, ``verify_net_in_out``,
``ckpt_export`` (TorchScript), ``verify_metadata`` offline, ``bundle_root`` from the repository root and the bundle
folder, the CLI from the bundle folder, and bad input (missing, corrupt, 3D, empty) named in the error. Also the data
module: generator, noise transforms, noisy test files, the MNI152 slicer on a stand-in volume.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_kan.networks import ConvKAE
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

import monai_kan.data as dd
from helpers import error_chain

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "kae_denoising"
META = str(BUNDLE / "configs" / "metadata.json")
SCHEMA = REPO / "bundles" / "metadata_schema.json"
DATA = {"synthetic": {"num_train": 6, "num_test": 2, "seed": 0}}
TRAIN = {**DATA, "num_val": 2, "roi_size": [32, 32], "num_samples": 2, "batch_size": 2, "epochs": 1,
         "progress_bar": False}


def cfg(name: str) -> str:
    return str(BUNDLE / "configs" / f"{name}.json")


def workflow(config: str, workflow_type: str, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=config, workflow_type=workflow_type, logging_file=False, **override)
    wf.initialize()
    return wf


def run(config: str, workflow_type: str, **override) -> ConfigWorkflow:
    wf = workflow(config, workflow_type, **override)
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    return wf


def epochs_done(checkpoint: dict) -> int:
    """Completed epochs in checkpoint_last.pt (ignite saves the iteration count and the epoch length)."""
    state = checkpoint["trainer"]
    return state["epoch"] if "epoch" in state else state["iteration"] // state["epoch_length"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("kae_bundle")
    run(cfg("train"), "train", bundle_root=str(root), **TRAIN)
    return root


def test_train_writes_checkpoints(trained):
    state = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert set(state) == set(ConvKAE(2, channels=(16, 32)).state_dict())  # a plain state_dict of the default network
    last = torch.load(trained / "models" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert epochs_done(last) == 1 and {"network", "optimizer", "lr_scheduler", "best_model"} <= set(last)
    assert (trained / "data" / "synthetic" / "dataset.json").is_file()


def test_fresh_run_refuses_then_resume_continues(tmp_path, trained):
    root = tmp_path / "resume"
    (root / "models").mkdir(parents=True)
    for name in ("model.pt", "checkpoint_last.pt"):
        (root / "models" / name).write_bytes((trained / "models" / name).read_bytes())
    with pytest.raises(Exception) as err:  # a new run must not silently replace the earlier checkpoints
        workflow(cfg("train"), "train", bundle_root=str(root), data_cache_dir=str(trained / "data"), **TRAIN)
    assert "resume" in error_chain(err.value)
    run(cfg("train"), "train", bundle_root=str(root), data_cache_dir=str(trained / "data"),
        **{**TRAIN, "epochs": 2, "resume": True})
    last = torch.load(root / "models" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert epochs_done(last) == 2


def test_inference_writes_images_on_input_geometry(trained):
    out = trained / "eval" / "denoised"
    run(cfg("inference"), "infer", bundle_root=str(trained), **DATA)
    inputs = sorted(next((trained / "data" / "noisy").glob("test_*")).glob("*.nii.gz"))
    assert len(inputs) == DATA["synthetic"]["num_test"]
    for src in inputs:
        stem = src.name[: -len(".nii.gz")]
        pred, ref = nib.load(str(out / f"{stem}_denoised.nii.gz")), nib.load(str(src))
        assert pred.shape == ref.shape and ref.ndim == 2
        np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-5)
        values = pred.get_fdata()
        assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0
        assert (out / f"{stem}_denoised.png").is_file()
    with pytest.raises(Exception) as err:  # a second run must not overwrite the outputs silently
        workflow(cfg("inference"), "infer", bundle_root=str(trained), **DATA)
    assert "overwrite" in error_chain(err.value)


def test_inference_without_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(Exception) as err:
        workflow(cfg("inference"), "infer", bundle_root=str(tmp_path), **DATA)
    assert "no trained model" in error_chain(err.value)
    assert not (tmp_path / "eval").exists()


def test_evaluate_reports_mse_psnr_ssim(trained):
    out = trained / "eval_metrics"
    run(cfg("evaluate"), "eval", bundle_root=str(trained), output_dir=str(out), **DATA)
    with open(out / "metrics.csv") as f:
        metrics = {row[0]: float(row[1]) for row in csv.reader(f) if row}
    for prefix in ("test", "noisy"):
        assert {f"{prefix}_mse", f"{prefix}_psnr", f"{prefix}_ssim"} <= set(metrics)
    assert 0 < metrics["noisy_mse"] < 0.1 and 10 < metrics["noisy_psnr"] < 25
    with open(out / "test_psnr_raw.csv") as f:
        assert len(list(csv.reader(f))) == 1 + DATA["synthetic"]["num_test"]  # header + one row per test slice


@pytest.mark.parametrize("cwd", [REPO, BUNDLE], ids=["repo_root", "bundle_folder"])
@pytest.mark.parametrize("name, workflow_type", [("train", "train"), ("inference", "infer"), ("evaluate", "eval")])
def test_bundle_root_is_the_bundle_folder(cwd, name, workflow_type, monkeypatch):
    monkeypatch.chdir(cwd)
    config = cfg(name) if cwd == REPO else f"configs/{name}.json"
    # no `initialize` expressions: they would check or load the bundle's own (absent) checkpoints
    wf = ConfigWorkflow(config_file=config, workflow_type=workflow_type, logging_file=False, init_id="skip")
    wf.initialize()
    assert Path(wf.bundle_root) == BUNDLE


def test_cli_inference_from_bundle_folder(trained, tmp_path):
    out = tmp_path / "cli_out"
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
            "--ckpt_path", str(trained / "models" / "model.pt"), "--data_cache_dir", str(trained / "data"),
            "--output_dir", str(out), "--save_png", "False", "--synthetic", json.dumps(DATA["synthetic"])]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(args, cwd=BUNDLE, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(list(out.glob("*_denoised.nii.gz"))) == DATA["synthetic"]["num_test"]
    assert not list(out.glob("*.png"))


def test_verify_net_in_out_and_metadata():
    for name in ("train", "inference", "evaluate"):
        verify_net_in_out(net_id="network_def", meta_file=META, config_file=cfg(name), device="cpu", any=37)
    import jsonschema  # noqa: F401  (the test extra; verify_metadata needs it)
    verify_metadata(meta_file=META, filepath=str(SCHEMA))


def test_ckpt_export_torchscript(trained, tmp_path):
    ts = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts), ckpt_file=str(trained / "models" / "model.pt"),
                meta_file=META, config_file=cfg("inference"), bundle_root=str(BUNDLE))
    scripted = torch.jit.load(str(ts), map_location="cpu")
    net = ConvKAE(2, channels=(16, 32), order=3).eval()  # the bundle's default network
    net.load_state_dict(torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(1, 1, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


# ------------------------------------------------------------------------------------------------- bad input
def test_inference_names_a_corrupt_input(trained, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "broken.nii.gz").write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(Exception) as err:
        run(cfg("inference"), "infer", bundle_root=str(trained), input_dir=str(inputs),
            output_dir=str(tmp_path / "out"))
    assert "broken.nii.gz" in error_chain(err.value)


def write_dataset(folder: Path, training: list, test: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps({"training": training, "test": test}))
    return folder


def test_datalist_errors_name_the_problem(tmp_path):
    folder = write_dataset(tmp_path / "ds", [{"image": "./imagesTr/a.nii.gz"}, {"image": "./imagesTr/b.nii.gz"}], [])
    with pytest.raises(FileNotFoundError, match="a.nii.gz"):
        dd.denoising_datalist(folder, "train", num_val=1)
    with pytest.raises(ValueError, match="empty"):
        dd.denoising_datalist(folder, "test")
    with pytest.raises(ValueError, match="split"):
        dd.denoising_datalist(folder, "bogus")
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="dataset.json"):
        dd.denoising_datalist(folder, "train")
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        dd.prepare_denoising_data(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="data_source"):
        dd.prepare_denoising_data("", "bogus", tmp_path)
    with pytest.raises(FileNotFoundError, match="input folder"):
        dd.image_files(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no image files"):
        dd.image_files(folder)


def test_load_slice_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        dd.load_slice(str(tmp_path / "missing.nii.gz"))
    truncated = tmp_path / "truncated.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(40, 40).astype(np.float32), np.eye(4)), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(RuntimeError, match="truncated.nii.gz"):
        dd.load_slice(str(truncated))
    volume = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(volume))
    with pytest.raises(ValueError, match="volume.nii.gz.*2D"):
        dd.load_slice(str(volume))
    nan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8), np.nan, np.float32), np.eye(4)), str(nan))
    with pytest.raises(ValueError, match="nan.nii.gz"):
        dd.load_slice(str(nan))


# ------------------------------------------------------------------------------------------------ data module
def test_synthetic_slices_are_deterministic_and_medical_range():
    a, b = dd.synthetic_slice((96, 112), seed=3), dd.synthetic_slice((96, 112), seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (96, 112) and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert (a == 0).mean() > 0.05 and (a > 0.9).any()  # air around the body, bright bone
    assert not np.array_equal(a, dd.synthetic_slice((96, 112), seed=4))
    with pytest.raises(ValueError, match="shape"):
        dd.synthetic_slice((8, 8))


def test_salt_and_pepper_noise():
    img = torch.full((1, 200, 200), 0.5)
    out = dd.RandSaltPepperNoise(amount=0.1, salt_vs_pepper=0.25).set_random_state(0)(img)
    salt, pepper = (out == 1.0).float().mean().item(), (out == 0.0).float().mean().item()
    assert abs(salt - 0.025) < 0.005 and abs(pepper - 0.075) < 0.01
    assert torch.equal(out, dd.RandSaltPepperNoise(amount=0.1, salt_vs_pepper=0.25).set_random_state(0)(img))
    d = dd.RandSaltPepperNoised(["image", "other"], amount=0.2).set_random_state(1)({"image": img, "other": img})
    assert torch.equal(d["image"], d["other"])
    assert torch.equal(dd.RandSaltPepperNoise(prob=0.0)(img), img)
    for kwargs in (dict(amount=1.5), dict(salt_vs_pepper=-0.1), dict(low=1.0, high=0.0)):
        with pytest.raises(ValueError):
            dd.RandSaltPepperNoise(**kwargs)


def test_noisy_pairs_fixed_and_on_clean_geometry(tmp_path):
    root = dd.make_synthetic_dataset(tmp_path / "syn", num_train=2, num_test=2)
    clean = dd.denoising_datalist(root, "test")
    pairs = dd.noisy_pairs(clean, tmp_path / "noisy", noise_std=0.2, salt_pepper=0.0, seed=5)
    again = dd.noisy_pairs(clean, tmp_path / "noisy2", noise_std=0.2, salt_pepper=0.0, seed=5)
    for p, q in zip(pairs, again):
        a, b, c = nib.load(p["image"]), nib.load(q["image"]), nib.load(p["label"])
        np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
        assert a.shape == c.shape and np.allclose(a.affine, c.affine)
        residual = a.get_fdata() - c.get_fdata()
        assert 0.12 < residual.std() < 0.2 and a.get_fdata().min() >= 0 and a.get_fdata().max() <= 1
    assert Path(pairs[0]["image"]).parent.name.startswith("test_gauss0.2_sp0_seed5")


def test_mni152_slicer_on_a_stand_in_volume(tmp_path, monkeypatch):
    """The MNI152 route, offline: the slicer only needs a NIfTI volume at the template's file name."""
    xx, yy, _ = np.mgrid[-1:1:40j, -1:1:48j, 0:1:80j]
    head = ((xx**2 + yy**2) < 0.64).astype(np.float32) * 200.0  # a cylinder: 40 kept axial slices, 8 for testing
    template = tmp_path / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    nib.save(nib.Nifti1Image(head, np.eye(4)), str(template))
    monkeypatch.setenv("MONAI_KAN_MNI152_T1", str(template))
    root = Path(dd.prepare_denoising_data("", "mni152", tmp_path / "cache"))
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["numTraining"] > 0 and dataset["numTest"] > 0
    first = nib.load(str(root / dataset["training"][0]["image"]))
    assert first.shape == (40, 48) and 0.0 <= first.get_fdata().min() and first.get_fdata().max() <= 1.0
    with pytest.raises(ValueError, match="test"):  # too few slices for a held-out block
        dd.make_mni152_dataset(tmp_path / "small", template, step=20)
    monkeypatch.delenv("MONAI_KAN_MNI152_T1")
    if importlib.util.find_spec("nilearn") is None:
        with pytest.raises(FileNotFoundError, match="nilearn"):
            dd.find_mni152_template(tmp_path / "absent.nii.gz")
