"""scripts/kae_denoising_results.py: the cache that makes it resumable, the matched baseline, the classical filters."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pytest
import torch

from helpers import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("kae_denoising_results")


def test_cached_results_are_computed_once(script, tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"psnr": 30.0}

    path = tmp_path / "r.json"
    assert script._cached(path, compute) == {"psnr": 30.0}
    assert script._cached(path, compute) == {"psnr": 30.0}  # an interrupted run continues from the file
    assert len(calls) == 1 and not list(tmp_path.glob("*.tmp"))


def test_widened_plain_baseline_matches_the_parameters(script):
    from monai_kan.networks import ConvKAE

    target = sum(p.numel() for p in ConvKAE(2, channels=(16, 32), order=3).parameters())
    wide = script._widened_channels(target)
    n = sum(p.numel() for p in ConvKAE(2, channels=wide, order=1).parameters())
    assert abs(n - target) / target < 0.05 and all(w > c for w, c in zip(wide, (16, 32)))


def test_classical_filters_score_like_the_bundle(script, tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("bm3d")
    rng = np.random.default_rng(0)
    clean = np.zeros((48, 48), np.float32)
    clean[12:36, 12:36] = 0.8
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    for name, img in (("clean", clean), ("noisy", noisy)):
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
    scores = script.classical_scores([{"image": str(tmp_path / "noisy.nii.gz"), "label": str(tmp_path / "clean.nii.gz")}])
    noisy_psnr = scores["noisy input (no denoising)"]["psnr"]
    expected = float(10 * np.log10(1.0 / np.mean((noisy - clean) ** 2)))
    assert noisy_psnr == pytest.approx(expected, abs=0.01)
    assert scores["BM3D, oracle sigma (bm3d)"]["psnr"] > noisy_psnr + 5  # a piecewise-constant image is easy
    assert torch.isfinite(torch.tensor([s["ssim"] for s in scores.values()])).all()
