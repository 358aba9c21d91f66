"""multi_gpu_train.json on CPU: 2 processes (torchrun, gloo), DistributedDataParallel and DistributedSampler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_kan.data.phantoms import write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is needed")
@pytest.mark.parametrize("overlays", [("multi_gpu_train",), ("kan_tools", "multi_gpu_train")],
                         ids=["multi_gpu", "kan_tools+multi_gpu"])
def test_two_process_cpu_training(tmp_path, overlays):
    data = tmp_path / "data"
    write_phantom_dataset(str(data), 2, num_train=4, num_test=1, shape_range=[40, 48], spacing=3.0)
    bundle = REPO / "bundles" / "kmunet_2d_segmentation"
    configs = [str(bundle / "configs" / f"{name}.json") for name in ("train", *overlays)]
    overrides = {
        "dataset_dir": str(data), "ckpt_dir": str(tmp_path / "models"), "log_dir": str(tmp_path / "runs"),
        "epochs": 2, "val_interval": 1, "num_val": 2, "num_workers": 0, "batch_size": 1, "num_samples": 1,
        "pixdim": [3.0, 3.0], "patch_size": [32, 32], "network_def#channels": [4, 8, 8, 16], "progress_bar": False,
    }
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(overrides))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file", json.dumps(configs), "--args_file", str(args_file)]
    env = {**os.environ, "MONAI_KAN_FUSED": "0", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    log = res.stdout[-4000:] + res.stderr[-4000:]
    assert res.returncode == 0, log
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # saved unwrapped from DDP
    last = torch.load(tmp_path / "models" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    # 2 training cases split over 2 ranks at batch size 1: one iteration per epoch and rank
    assert last["trainer"]["epoch_length"] == 1 and last["trainer"]["iteration"] == 2
    assert "Epoch[2] Metrics" in res.stdout  # rank 0 logs validation
    # TensorBoard is written by rank 0 only (handlers disabled per rank by "_disabled_": "@is_not_rank0"): the event
    # files are named events.out.tfevents.<time>.<host>.<pid>.<n>
    events = list((tmp_path / "runs").glob("events.out.tfevents.*"))
    assert events and len({e.name.rsplit(".", 2)[1] for e in events}) == 1, [e.name for e in events]
