"""Grid update, grid extension and pruning under DistributedDataParallel keep the replicas identical.

Two gloo processes (``torch.multiprocessing.spawn``) train a small KMUNet on different data with different batch
sizes; after each operation and one optimizer step every parameter and buffer is gathered and compared across ranks.
The refit is also compared with what one process computes on the concatenated batches (the statistically right
answer), and the unsynchronised update (``distributed=False``) is shown to leave the replicas apart, as before.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from monai_kan.handlers.kan_grid import KANGridHandler
from monai_kan.tools.grid import extend_network_grids, record_kan_inputs, update_network_grids
from monai_kan.tools.pruning import prune_kan, pruned_edge_mask
from monai_kan.networks import KMUNet

WORLD = 2


def _max_diffs(module: torch.nn.Module) -> dict:
    """``{name: max over ranks of |rank r - rank 0|}`` for every parameter and buffer (a collective call)."""
    out = {}
    for name, t in itertools.chain(module.named_parameters(), module.named_buffers()):
        t = t.detach().contiguous()
        ts = [torch.empty_like(t) for _ in range(WORLD)]
        dist.all_gather(ts, t)
        out[name] = max(float((a.double() - ts[0].double()).abs().max()) for a in ts)
    return out


def _step(model, opt, x):
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()


def _gather_inputs(inputs: dict) -> dict:
    """Every rank's recorded layer inputs, concatenated along the batch in rank order."""
    parts = [None] * WORLD
    dist.all_gather_object(parts, {k: v.cpu() for k, v in inputs.items()})
    return {k: torch.cat([p[k] for p in parts], 0) for k in inputs}


def _expect_value_error(fn) -> bool:
    try:
        fn()
    except ValueError:
        return True
    return False


def _scenarios(rank: int, res: dict) -> None:
    torch.manual_seed(0)
    net = KMUNet(2, 1, 2, channels=(4, 8), strides=(2,))
    ddp = DDP(net)
    opt = torch.optim.Adam(ddp.parameters(), 1e-2)
    torch.manual_seed(100 + rank)
    x = torch.randn(1 + 2 * rank, 1, 16, 16) * (1 + rank) + rank  # different data, sizes and ranges per rank
    _step(ddp, opt, x)

    # grid update on the wrapper, in place: identical to one process fitting the concatenated batches
    inputs = record_kan_inputs(ddp, x)
    reference = copy.deepcopy(net)
    single = update_network_grids(reference, inputs=_gather_inputs(inputs), max_samples=None, distributed=False)
    out = update_network_grids(ddp, inputs=inputs, optimizer=opt, max_samples=None)
    res["update_vs_single"] = max(
        float((a - b).abs().max()) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))
    res["update_results_match"] = all(
        abs(out["module." + n].max_edge_error - r.max_edge_error) < 1e-9 for n, r in single.items())
    _step(ddp, opt, x)
    res["update"] = _max_diffs(net)
    # ranks with different sample counts under a cap: proportional quotas, still identical; then the handler
    update_network_grids(ddp, x, optimizer=opt, max_samples=300, max_error=0.5)
    _step(ddp, opt, x)
    res["update_capped"] = _max_diffs(net)

    from monai.engines import SupervisedTrainer

    handler = KANGridHandler(ddp, opt, update_every=1)
    data = [{"image": x, "label": torch.cat([x > 0, x <= 0], 1).float()}] * 2
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=ddp,
                                optimizer=opt, loss_function=torch.nn.MSELoss(), train_handlers=[handler])
    trainer.run()
    res["handler_events"] = [(c, a) for c, a, _, _ in handler.history]
    res["handler"] = _max_diffs(net)
    res["handler_refuses_extension"] = _expect_value_error(lambda: KANGridHandler(ddp, extend_at={"3": 8}))

    # grid extension: refused on the wrapper; on its module followed by a new wrapper
    inputs = record_kan_inputs(ddp, x)
    res["extend_refused_on_wrapper"] = _expect_value_error(lambda: extend_network_grids(ddp, 8, inputs=inputs))
    extend_network_grids(ddp.module, 8, inputs=inputs, optimizer=opt)  # names recorded on the wrapper
    del ddp
    ddp = DDP(net)
    _step(ddp, opt, x)
    res["extend_grid_size"] = [m.grid_size for n, m in net.named_modules() if hasattr(m, "knots")]
    res["extend"] = _max_diffs(net)

    # pruning: masks from the scores of all ranks; a shrunk copy is wrapped again, masking in place keeps the wrapper
    single_rep = prune_kan(copy.deepcopy(net), torch.cat(_all_batches(x)), threshold=0.4, distributed=False)[1]
    res["prune_refused_on_wrapper"] = _expect_value_error(lambda: prune_kan(ddp, x, threshold=0.4))
    pruned, rep = prune_kan(net, x, threshold=0.4)
    res["prune_layers_match_single"] = rep.layers == single_rep.layers
    res["pruned_edges"] = sum(v["pruned_edges"] for v in rep.layers.values())
    pddp = DDP(pruned)
    popt = torch.optim.Adam(pddp.parameters(), 1e-2)
    _step(pddp, popt, x)
    res["prune"] = _max_diffs(pruned)
    prune_kan(ddp, x, threshold=0.2, inplace=True, shrink=False)
    res["masked_edges"] = sum(int(pruned_edge_mask(m).sum()) for n, m in net.named_modules() if hasattr(m, "knots"))
    opt = torch.optim.Adam(ddp.parameters(), 1e-2)  # fresh moments: the old ones would move the masked edges
    _step(ddp, opt, x)
    res["masked_edges_after_step"] = sum(
        int(pruned_edge_mask(m).sum()) for n, m in net.named_modules() if hasattr(m, "knots"))
    res["mask_in_place"] = _max_diffs(net)

    # the unsynchronised update (each rank refits to its own data) leaves the replicas apart, as reported
    update_network_grids(ddp, x, optimizer=opt, distributed=False)
    _step(ddp, opt, x)
    res["local_update"] = _max_diffs(net)


def _all_batches(x):
    parts = [None] * WORLD
    dist.all_gather_object(parts, x)
    return parts


def _worker(rank: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    # a short timeout: a rank left waiting in a collective fails the test instead of hanging it
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    res: dict = {}
    try:
        _scenarios(rank, res)
    except Exception:
        res["error"] = traceback.format_exc()
        raise
    finally:
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_grid_update_extension_and_pruning_keep_replicas_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MONAI_KAN_FUSED", "0")
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    res = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert "error" not in res, res.get("error")
    for scenario in ("update", "update_capped", "handler", "extend", "prune", "mask_in_place"):
        diffs = res[scenario]
        assert diffs and all(v == 0 for v in diffs.values()), (scenario, {k: v for k, v in diffs.items() if v})
    assert res["update_vs_single"] < 1e-6 and res["update_results_match"]
    assert res["handler_events"] == [(1, "update"), (2, "update")] and res["handler_refuses_extension"]
    assert res["extend_refused_on_wrapper"] and res["extend_grid_size"] == [8, 8, 8, 8]
    assert res["prune_refused_on_wrapper"] and res["prune_layers_match_single"] and res["pruned_edges"] > 0
    assert res["masked_edges"] > 0 and res["masked_edges_after_step"] == res["masked_edges"]
    assert max(res["local_update"].values()) > 1e-3  # the check above would catch the unsynchronised refit
