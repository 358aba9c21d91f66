"""scripts/_bundle_runs.py: the helpers that run_main_job.py, compare_unet.py and kae_denoising_results.py share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def runs():
    return load_script("_bundle_runs")


def test_bundle_command(runs):
    one = runs.bundle_command(["a/train.json"], ["--epochs", 2])
    assert one == [sys.executable, "-m", "monai.bundle", "run", "--config_file", "a/train.json", "--epochs", "2"]
    two = runs.bundle_command(["i.json", Path("e.json")], args_file="x_args.json")
    assert two[5:] == ['["i.json", "e.json"]', "--args_file", "x_args.json"]
    with pytest.raises(ValueError, match="config_files"):
        runs.bundle_command([])


@pytest.mark.slow
def test_run_bundle_with_args_file_and_log(runs, tmp_path):
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"run": ["$print('message:', @message)"]}))
    log = tmp_path / "job.log"
    timing = runs.run_bundle([config], log=log, args={"message": "from the args file"})
    assert json.loads((tmp_path / "job_args.json").read_text()) == {"message": "from the args file"}
    assert "message: from the args file" in log.read_text()
    assert timing["wall_s"] > 0 and timing["cpu_s"] > 0
    with pytest.raises(ValueError, match="log"):
        runs.run_bundle([config], args={"message": "x"})


def test_run_bundle_failure_names_the_log(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(runs.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 3))
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\); see .*bad\.log"):
        runs.run_bundle(["train.json"], log=tmp_path / "bad.log")


@pytest.mark.parametrize("sep", [",", "\t"])
def test_read_metrics_files(runs, tmp_path, sep):
    (tmp_path / "metrics.csv").write_text(f"val_mean_dice{sep}0.75\nval_hd95_tumor{sep}inf\nnote{sep}n/a\n\n")
    assert runs.read_metrics(tmp_path / "metrics.csv") == {"val_mean_dice": 0.75, "val_hd95_tumor": float("inf")}
    rows = [["filename", "organ", "tumor", "mean"], ["/data/case1.nii.gz", "0.9", "0.5", "0.7"], ["case2", "1", "0", "0.5"]]
    (tmp_path / "raw.csv").write_text("".join(sep.join(row) + "\n" for row in rows))
    assert runs.read_raw_metrics(tmp_path / "raw.csv") == {"case1.nii.gz": [0.9, 0.5, 0.7], "case2": [1.0, 0.0, 0.5]}


def test_count_parameters_of_a_config(runs, tmp_path):
    config = {"imports": ["$import monai_kan"], "network_def": {"_target_": "KANLinear", "in_features": 3,
                                                                "out_features": 2}}
    import monai_kan

    expected = sum(p.numel() for p in monai_kan.KANLinear(3, 2).parameters())
    assert runs.count_parameters(config) == expected
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"width": 4, "network_def": {"_target_": "torch.nn.Linear", "in_features": "@width",
                                                            "out_features": 5}}))
    assert runs.count_parameters(path) == 4 * 5 + 5
    assert runs.count_parameters(path, {"width": 7}) == 7 * 5 + 5


def test_write_between_markers(runs, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("head\n<!-- t:start -->\nold\ntable\n<!-- t:end -->\ntail <!-- u:start --><!-- u:end -->\n")
    runs.write_between_markers(readme, "<!-- t:start -->", "<!-- t:end -->", "new")
    assert readme.read_text() == "head\n<!-- t:start -->\nnew\n<!-- t:end -->\ntail <!-- u:start --><!-- u:end -->\n"
    with pytest.raises(ValueError, match="markers"):
        runs.write_between_markers(readme, "<!-- v:start -->", "<!-- v:end -->", "x")
