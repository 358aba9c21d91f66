"""Checkpoints that lose nothing (atomic replace, deferred removal, rank 0 only), the best model across a resume, NaN
metrics, resume through MONAI's CheckpointLoader, the one state-dict reader, the trained-model guard, and the small
bundle helpers (flags, default bundle_root, progress bar)."""

from __future__ import annotations

import io
import logging
import os
import re

import ignite.distributed as idist
import numpy as np
import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from ignite.handlers import ProgressBar as IgniteProgressBar
from monai.handlers import CheckpointLoader, CheckpointSaver

from monai_kan.handlers import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    CheckedCheckpointLoader,
    ProgressBar,
    as_bool,
    atomic_save,
    check_fresh_run,
    check_output_dir,
    choose,
    default_bundle_root,
    load_network_state,
    load_trained_model,
    per_class_metrics,
    read_state_dict,
)


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def _files(folder) -> list:
    return sorted(p.name for p in folder.iterdir())


def _failing_save(obj, f, **kwargs):
    """torch.save that writes half a file and then fails (a full disk, a killed process)."""
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("disk full (simulated)")


# ---------------------------------------------------------------------------------------------------- writing
def test_atomic_save_replaces_or_keeps(tmp_path):
    path = tmp_path / "sub" / "model.pt"
    atomic_save({"a": torch.ones(2)}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"a": _Unpicklable()}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))  # old file intact
    assert _files(path.parent) == ["model.pt"]  # no temp file left


def test_disk_saver_is_an_ignite_disk_saver_with_mode_0644(tmp_path):
    saver = AtomicDiskSaver(tmp_path / "models")
    assert isinstance(saver, DiskSaver) and (tmp_path / "models").is_dir()
    saver({"w": torch.ones(1)}, "a.pt")
    assert oct(os.stat(tmp_path / "models" / "a.pt").st_mode & 0o777) == oct(0o644)  # not tempfile's 0600
    fixed = AtomicDiskSaver(tmp_path / "models", filename="last.pt")
    fixed({"w": torch.zeros(1)}, "checkpoint_epoch=3.pt")  # the fixed name wins, as in MONAI's _DiskSaver
    assert _files(tmp_path / "models") == ["a.pt", "last.pt"]


def test_disk_saver_defers_removal_until_the_next_save(tmp_path, monkeypatch):
    saver = AtomicDiskSaver(tmp_path)
    saver({"w": torch.ones(1)}, "a.pt")
    saver.remove("a.pt")  # ignite's Checkpoint removes the old file *before* it saves the new one
    assert _files(tmp_path) == ["a.pt"]
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="disk full"):
        saver({"w": torch.zeros(1)}, "b.pt")
    assert _files(tmp_path) == ["a.pt"]  # the failed save removed nothing and left no temp file
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], torch.ones(1))
    monkeypatch.undo()
    saver({"w": torch.zeros(1)}, "b.pt")
    assert _files(tmp_path) == ["b.pt"]  # removed once its successor is on disk
    fixed = AtomicDiskSaver(tmp_path, filename="b.pt")
    fixed.remove("anything.pt")  # maps to the fixed name: the file about to be rewritten
    fixed({"w": torch.full((1,), 2.0)}, "other.pt")
    assert _files(tmp_path) == ["b.pt"]  # never removes the file it has just written
    assert torch.equal(torch.load(tmp_path / "b.pt", weights_only=True)["w"], torch.full((1,), 2.0))


def test_rank_above_zero_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    net = nn.Linear(2, 2)
    best = AtomicCheckpointSaver(str(tmp_path / "models"), {"network": net}, save_key_metric=True,
                                 key_metric_filename="model.pt")
    last = AtomicCheckpointSaver(str(tmp_path / "models"), {"network": net, "best_model": best}, engine_key="trainer",
                                 save_interval=1, interval_filename="checkpoint_last.pt", save_final=True,
                                 final_filename="checkpoint_last.pt")
    engine = _metric_engine([0.5, 0.7])
    best.attach(engine)
    last.attach(engine)
    engine.run([0], max_epochs=2)
    assert not (tmp_path / "models").exists()  # not even the folder
    assert best.state_dict()["_saved"][0][0] == pytest.approx(0.7)  # the ranking is kept on every rank


# ------------------------------------------------------------------------------------------------- best model
def _metric_engine(values, net=None, mark=0):
    """An engine whose epoch e reports key metric values[e - 1] (and sets the weights of ``net`` to mark + e)."""
    engine = Engine(lambda e, b: None)
    engine.state.key_metric_name = "dice"

    @engine.on(Events.EPOCH_COMPLETED)
    def _set(e):
        e.state.metrics["dice"] = values[e.state.epoch - 1]
        if net is not None:
            with torch.no_grad():
                net.weight.fill_(float(mark + e.state.epoch))

    return engine


def _saved_epoch(path) -> float:
    return float(torch.load(path, map_location="cpu", weights_only=True)["weight"].flatten()[0])


def test_best_model_is_a_plain_state_dict_and_nan_never_improves(tmp_path, caplog):
    net = nn.Linear(2, 2)
    saver = AtomicCheckpointSaver(str(tmp_path), {"network": nn.DataParallel(net)}, save_key_metric=True,
                                  key_metric_filename="model.pt")
    assert isinstance(saver, CheckpointSaver)
    engine = _metric_engine([float("nan"), 0.3, float("nan"), 0.2, 0.4, float("nan")], net)
    saver.attach(engine)  # after the metric setter: the saver sees this epoch's value
    written = {}

    @engine.on(Events.EPOCH_COMPLETED)
    def _record(e):
        path = tmp_path / "model.pt"
        written[e.state.epoch] = _saved_epoch(path) if path.exists() else None

    with caplog.at_level(logging.WARNING):
        engine.run([0], max_epochs=6)
    # epoch 1 (NaN) saves nothing; 2 is the first model; NaN and worse scores keep it; 5 improves; NaN keeps 5
    assert written == {1: None, 2: 2.0, 3: 2.0, 4: 2.0, 5: 5.0, 6: 5.0}
    assert sum("NaN" in r.getMessage() for r in caplog.records) == 3
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert set(state) == {"weight", "bias"}  # plain state_dict of the unwrapped network, no "module." prefix
    assert _files(tmp_path) == ["model.pt"]
    assert saver.state_dict() == {"_saved": [(pytest.approx(0.4), "network_key_metric=0.4000.pt")]}


def test_best_model_is_not_replaced_by_a_worse_one_after_resume(tmp_path):
    net = nn.Linear(2, 2)

    def run(values, mark, state=None):
        saver = AtomicCheckpointSaver(str(tmp_path), {"network": net}, save_key_metric=True,
                                      key_metric_filename="model.pt")
        if state is not None:
            saver.load_state_dict(state)
        engine = _metric_engine(values, net, mark)
        saver.attach(engine)
        engine.run([0], max_epochs=len(values))
        return saver.state_dict()

    state = run([0.5, 0.7], mark=0)
    assert _saved_epoch(tmp_path / "model.pt") == 2.0
    run([0.6, 0.65], mark=10, state=state)  # resumed: worse than the 0.7 of the first run, model.pt stays
    assert _saved_epoch(tmp_path / "model.pt") == 2.0
    resumed = run([0.6, 0.8], mark=20, state=state)  # resumed: better, replaced
    assert _saved_epoch(tmp_path / "model.pt") == 22.0
    assert resumed["_saved"][0][0] == pytest.approx(0.8)
    run([0.6], mark=30)  # without the saved ranking (MONAI's default) the worse model would replace it
    assert _saved_epoch(tmp_path / "model.pt") == 31.0
    assert _files(tmp_path) == ["model.pt"]
    empty = AtomicCheckpointSaver(str(tmp_path), {"network": net}, save_interval=1)
    assert empty.state_dict() == {}
    empty.load_state_dict({})  # a saver without key metric restores nothing, without MONAI's warning


def test_saver_rejects_bad_args(tmp_path):
    with pytest.raises(ValueError, match="must not use the name 'trainer'"):
        AtomicCheckpointSaver(str(tmp_path), {"trainer": nn.Linear(1, 1)}, engine_key="trainer")
    with pytest.raises(ValueError, match="`n_saved` must be 1"):
        AtomicCheckpointSaver(str(tmp_path), {"n": nn.Linear(1, 1)}, save_interval=1,
                              interval_filename="last.pt", n_saved=3)
    with pytest.raises(ValueError, match="must not use the name 'trainer'"):
        CheckedCheckpointLoader(str(tmp_path / "x.pt"), {"trainer": nn.Linear(1, 1)}, engine_key="trainer")


# ------------------------------------------------------------------------------------------ training and resume
def _train_setup(tmp_path, stop_at=None, resume=False, max_epochs=5):
    """A tiny regression trainer with the bundles' state saver and loader; optionally 'crashes' at an iteration."""
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    data = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(3)]

    def step(engine, batch):
        if stop_at is not None and engine.state.iteration == stop_at:
            raise KeyboardInterrupt("simulated interruption")
        opt.zero_grad()
        loss = ((net(batch[0]) - batch[1]) ** 2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    trainer = Engine(step)
    seen = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.epoch))
    state = {"network": net, "optimizer": opt}
    AtomicCheckpointSaver(str(tmp_path), state, engine_key="trainer", save_interval=1,
                          interval_filename="checkpoint_last.pt", save_final=True,
                          final_filename="checkpoint_last.pt").attach(trainer)
    CheckedCheckpointLoader(str(tmp_path / "checkpoint_last.pt"), state, engine_key="trainer",
                            enabled=resume).attach(trainer)
    return trainer, data, net, seen, max_epochs


def test_resume_after_interruption_keeps_completed_epochs(tmp_path):
    trainer, data, _, seen, max_epochs = _train_setup(tmp_path, stop_at=8)  # iteration 8: inside epoch 3
    with pytest.raises(KeyboardInterrupt):
        trainer.run(data, max_epochs=max_epochs)
    assert seen == [1, 2, 3]
    saved = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert set(saved) == {"network", "optimizer", "trainer"}
    assert saved["trainer"]["iteration"] == 2 * len(data)  # epochs 1 and 2; the failed epoch did not replace it
    assert _files(tmp_path) == ["checkpoint_last.pt"]

    trainer, data, net, seen, max_epochs = _train_setup(tmp_path, resume=True)
    trainer.run(data, max_epochs=max_epochs)
    assert seen == [3, 4, 5]  # completed epochs are not redone
    assert trainer.state.epoch == 5 and trainer.state.iteration == 5 * len(data)

    # an uninterrupted run gives the same weights (same batches, same optimizer state)
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref_trainer, ref_data, ref_net, _, _ = _train_setup(ref_dir)
    ref_trainer.run(ref_data, max_epochs=5)
    torch.testing.assert_close(net.weight, ref_net.weight)


def test_resume_with_more_epochs_continues(tmp_path, caplog):
    trainer, data, _, _, _ = _train_setup(tmp_path)
    trainer.run(data, max_epochs=2)
    trainer, data, _, seen, _ = _train_setup(tmp_path, resume=True)
    assert isinstance(trainer._event_handlers[Events.STARTED][0][0], CheckpointLoader)
    trainer.run(data, max_epochs=4)  # MONAI's loader would keep the checkpoint's max_epochs or raise
    assert seen == [3, 4] and trainer.state.max_epochs == 4
    assert torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["trainer"]["iteration"] == 4 * len(data)
    trainer, data, _, seen, _ = _train_setup(tmp_path, resume=True)
    with caplog.at_level(logging.WARNING):
        trainer.run(data, max_epochs=3)  # fewer than done: a warning, not MONAI's ValueError
    assert seen == [] and "nothing left to train" in caplog.text


def _cosine_setup(tmp_path, max_epochs, resume=False, stop_at=None, lr_schedule="restart"):
    """A trainer as the bundles wire it: Adam, CosineAnnealingLR(T_max=max_epochs) stepped per epoch by MONAI's
    LrScheduleHandler, the state saver and loader. Returns (trainer, data, rates): rates[e] is the rate epoch e
    trained with, rates["end"] the rate after the run."""
    from monai.handlers import LrScheduleHandler

    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.003)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs, eta_min=0.003 * 0.05)
    data = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(2)]

    def step(engine, batch):
        if stop_at is not None and engine.state.iteration == stop_at:
            raise KeyboardInterrupt("simulated interruption")
        opt.zero_grad()
        loss = ((net(batch[0]) - batch[1]) ** 2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    trainer = Engine(step)
    rates = {}
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: rates.__setitem__(e.state.epoch,
                                                                                  opt.param_groups[0]["lr"]))
    trainer.add_event_handler(Events.COMPLETED, lambda e: rates.__setitem__("end", opt.param_groups[0]["lr"]))
    LrScheduleHandler(scheduler, print_lr=False).attach(trainer)
    state = {"network": net, "optimizer": opt, "lr_scheduler": scheduler}
    AtomicCheckpointSaver(str(tmp_path), state, engine_key="trainer", save_interval=1,
                          interval_filename="checkpoint_last.pt", save_final=True,
                          final_filename="checkpoint_last.pt").attach(trainer)
    CheckedCheckpointLoader(str(tmp_path / "checkpoint_last.pt"), state, engine_key="trainer", enabled=resume,
                            lr_schedule=lr_schedule).attach(trainer)
    return trainer, data, rates


@pytest.mark.parametrize("first_epochs, stop_at", [(3, None), (5, 7)], ids=["finished_3", "interrupted_5_at_3"])
def test_resume_with_more_epochs_extends_the_cosine_schedule(tmp_path, first_epochs, stop_at):
    """`--resume true --epochs 9` after a 3-epoch run (or a 5-epoch run stopped after 3): the rate never rises and
    reaches eta_min after epoch 9 (restart from the current rate over the remaining epochs)."""
    eta_min = 0.003 * 0.05
    trainer, data, first = _cosine_setup(tmp_path, first_epochs, stop_at=stop_at)
    if stop_at is None:
        trainer.run(data, max_epochs=first_epochs)
    else:
        with pytest.raises(KeyboardInterrupt):
            trainer.run(data, max_epochs=first_epochs)
    saved = torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)
    assert saved["trainer"]["iteration"] == 3 * len(data) and saved["lr_scheduler"]["T_max"] == first_epochs
    rate_after_3 = saved["optimizer"]["param_groups"][0]["lr"]

    trainer, data, resumed = _cosine_setup(tmp_path, 9, resume=True)  # the config's T_max is @epochs = 9 now
    trainer.run(data, max_epochs=9)
    assert sorted(k for k in resumed if k != "end") == [4, 5, 6, 7, 8, 9]
    assert resumed[4] == pytest.approx(rate_after_3)  # continues where it stopped
    rates = [first[e] for e in (1, 2, 3)] + [resumed[e] for e in range(4, 10)] + [resumed["end"]]
    assert all(b <= a + 1e-12 for a, b in zip(rates, rates[1:])), rates  # never increases
    assert resumed["end"] == pytest.approx(eta_min, rel=1e-6)
    if stop_at is not None:  # a real cosine over the 6 remaining epochs: strictly decreasing, above eta_min until then
        assert all(b < a for a, b in zip(rates[3:], rates[4:])) and resumed[9] > eta_min
    last = torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)
    assert last["lr_scheduler"]["T_max"] == 6 and last["lr_scheduler"]["last_epoch"] == 6

    # MONAI's behaviour ("keep"): T_max stays, the rate climbs back to the initial 0.003 at epoch 7
    if stop_at is None:
        keep_dir = tmp_path / "keep"
        keep_dir.mkdir()
        trainer, data, _ = _cosine_setup(keep_dir, 3)
        trainer.run(data, max_epochs=3)
        trainer, data, kept = _cosine_setup(keep_dir, 9, resume=True, lr_schedule="keep")
        trainer.run(data, max_epochs=9)
        assert kept[7] == pytest.approx(0.003)


def test_lr_schedule_option_is_checked(tmp_path):
    with pytest.raises(ValueError, match="`lr_schedule` must be 'restart' or 'keep'"):
        CheckedCheckpointLoader(str(tmp_path / "x.pt"), {"network": nn.Linear(1, 1)}, lr_schedule="rebuild")


def test_resume_errors_name_the_file_and_entries(tmp_path):
    trainer, data, _, _, _ = _train_setup(tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*checkpoint_last.pt to restore \['network', "
                                                r"'optimizer', 'trainer'\] from: train without `--resume true`"):
        trainer.run(data, max_epochs=1)
    torch.save({"network": nn.Linear(3, 1).state_dict()}, tmp_path / "checkpoint_last.pt")
    trainer, data, net, _, _ = _train_setup(tmp_path, resume=True)
    before = _snapshot(net)
    with pytest.raises(KeyError, match=r"has no \['optimizer', 'trainer'\] \(it holds \['network'\]\)"):
        trainer.run(data, max_epochs=1)
    _assert_unchanged(net, before)
    disabled = _train_setup(tmp_path / "none", resume=False)[0]
    assert not any(isinstance(h[0], CheckpointLoader) for h in disabled._event_handlers[Events.STARTED])


def test_loader_reads_a_single_state_dict_like_monai(tmp_path):
    src = _net()
    torch.save(nn.DataParallel(src).state_dict(), tmp_path / "model.pt")  # plain file, DP prefixes
    dst = _net()
    engine = Engine(lambda e, b: None)
    CheckedCheckpointLoader(str(tmp_path / "model.pt"), {"network": dst}).attach(engine)
    engine.run([0], max_epochs=1)
    torch.testing.assert_close(dst[2].weight, src[2].weight)


def test_resume_accepts_a_data_parallel_checkpoint(tmp_path):
    src = _net()
    opt = torch.optim.SGD(src.parameters(), lr=0.1)
    engine = Engine(lambda e, b: None)
    engine.run([0], max_epochs=1)
    torch.save({"network": nn.DataParallel(src).state_dict(), "optimizer": opt.state_dict(),
                "trainer": engine.state_dict()}, tmp_path / "checkpoint_last.pt")
    dst = _net()
    trainer = Engine(lambda e, b: None)
    CheckedCheckpointLoader(str(tmp_path / "checkpoint_last.pt"),
                            {"network": nn.DataParallel(dst), "optimizer": torch.optim.SGD(dst.parameters(), lr=0.1)},
                            engine_key="trainer").attach(trainer)
    trainer.run([0], max_epochs=2)
    assert trainer.state.epoch == 2
    torch.testing.assert_close(dst[0].weight, src[0].weight)


def test_failed_resume_changes_nothing(tmp_path):
    src = _net(out=5)
    torch.save({"network": src.state_dict(), "optimizer": torch.optim.SGD(src.parameters(), lr=0.5).state_dict(),
                "trainer": {"epoch_length": 1, "max_epochs": 3, "iteration": 3}}, tmp_path / "checkpoint_last.pt")
    net = _net(out=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = _snapshot(net)
    trainer = Engine(lambda e, b: None)
    CheckedCheckpointLoader(str(tmp_path / "checkpoint_last.pt"), {"network": net, "optimizer": opt},
                            engine_key="trainer").attach(trainer)
    epochs = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    with pytest.raises(ValueError, match=r"checkpoint_last.pt \('network'\) does not fit .* '2.weight': \[5, 3\] vs "
                                         r"\[4, 3\]; '2.bias': \[5\] vs \[4\]"):
        trainer.run([0], max_epochs=4)
    _assert_unchanged(net, before)
    assert opt.param_groups[0]["lr"] == 0.1 and epochs == []  # nothing else restored, nothing trained


# ------------------------------------------------------------------------------------------- reading, loading
def test_read_state_dict_layouts_and_errors(tmp_path):
    net = _net()
    layouts = [net.state_dict(), {"model": net.state_dict()}, {"network": net.state_dict(), "optimizer": {}},
               {"state_dict": nn.DataParallel(net).state_dict()}, {"net": net.state_dict(), "epoch": 3}]
    for i, layout in enumerate(layouts):
        torch.save(layout, tmp_path / f"{i}.pt")
        state = read_state_dict(str(tmp_path / f"{i}.pt"))
        assert [k.replace("module.", "") for k in state] == list(net.state_dict())  # prefixes: load_network_state
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_state_dict(str(tmp_path / "missing.pt"))
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt does not hold a network state dict .*\['epoch', 'optimizer'\]"):
        read_state_dict(str(tmp_path / "other.pt"))
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="got list"):
        read_state_dict(str(tmp_path / "list.pt"))
    torch.jit.script(nn.Linear(2, 2)).save(str(tmp_path / "model.ts"))
    with pytest.raises(ValueError, match="TorchScript export"):
        read_state_dict(str(tmp_path / "model.ts"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt cannot be read as a checkpoint"):
        read_state_dict(str(tmp_path / "junk.pt"))


def test_load_trained_model(tmp_path):
    net = nn.Linear(2, 3)
    with pytest.raises(FileNotFoundError, match="no trained model at .*missing.pt: inference with untrained"):
        load_trained_model(net, str(tmp_path / "missing.pt"))
    src = nn.Linear(2, 3)
    torch.save(src.state_dict(), tmp_path / "model.pt")
    load_trained_model(net, str(tmp_path / "model.pt"))
    torch.testing.assert_close(net.weight, src.weight)
    torch.save({"network": src.state_dict(), "optimizer": {}}, tmp_path / "last.pt")
    other = load_trained_model(nn.Linear(2, 3), str(tmp_path / "last.pt"))
    torch.testing.assert_close(other.weight, src.weight)
    with pytest.raises(ValueError, match="does not fit the configured network"):
        load_trained_model(nn.Linear(2, 4), str(tmp_path / "model.pt"))


def _net(out: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, out))


def _wrap(net: nn.Module, wrapper: str) -> nn.Module:
    if wrapper == "dp":
        return nn.DataParallel(net)
    if wrapper == "dp_dp":
        return nn.DataParallel(nn.DataParallel(net))
    if wrapper == "ddp":
        return nn.parallel.DistributedDataParallel(net)
    return net


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group, for wrapping CPU modules in DistributedDataParallel."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is needed")
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        idist.sync()  # ignite caches the distributed context: forget the destroyed group


@pytest.mark.parametrize("saved_from", ["plain", "dp", "dp_dp", "ddp"])
@pytest.mark.parametrize("loaded_into", ["plain", "dp", "ddp"])
def test_load_trained_model_accepts_wrapped_networks(saved_from, loaded_into, tmp_path, request):
    if "ddp" in (saved_from, loaded_into):
        request.getfixturevalue("process_group")
    torch.manual_seed(0)
    src = _net()
    torch.save(_wrap(src, saved_from).state_dict(), tmp_path / "model.pt")
    if saved_from != "plain":
        assert all(k.startswith("module.") for k in torch.load(tmp_path / "model.pt", weights_only=True))
    dst = _net()
    wrapped = _wrap(dst, loaded_into)
    assert load_trained_model(wrapped, str(tmp_path / "model.pt")) is wrapped
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        torch.testing.assert_close(a, b)
    # the handler and a training checkpoint ({"network": state_dict}) take the same way
    torch.save({"network": _wrap(src, saved_from).state_dict()}, tmp_path / "last.pt")
    dst = _net()
    engine = Engine(lambda e, b: None)
    CheckedCheckpointLoader(str(tmp_path / "last.pt"), {"network": _wrap(dst, loaded_into)}).attach(engine)
    engine.run([0], max_epochs=1)
    torch.testing.assert_close(dst[2].weight, src[2].weight)


def _snapshot(net: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _assert_unchanged(net: nn.Module, before: dict) -> None:
    after = net.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert after[k].shape == v.shape and torch.equal(after[k], v), k


def test_failed_load_changes_nothing(tmp_path):
    torch.manual_seed(0)
    torch.save(nn.DataParallel(_net(out=4)).state_dict(), tmp_path / "model.pt")
    net = _net(out=5)  # first layer fits, last does not: torch would copy the first before raising
    before = _snapshot(net)
    with pytest.raises(ValueError) as err:
        load_trained_model(nn.DataParallel(net), str(tmp_path / "model.pt"))
    msg = str(err.value)
    assert "does not fit the configured network" in msg and "nothing was loaded" in msg
    assert "'2.weight': [4, 3] vs [5, 3]" in msg and "'2.bias': [4] vs [5]" in msg  # checkpoint vs network
    assert "'0.weight'" not in msg
    _assert_unchanged(net, before)

    # strict: keys missing from the checkpoint or unknown to the network
    state = _net().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["0.bias"]
    net = _net()
    before = _snapshot(net)
    with pytest.raises(ValueError, match=r"missing in the checkpoint: '0.bias'; not in the network: 'extra.weight'"):
        load_network_state(net, state, source="the test state")
    _assert_unchanged(net, before)
    load_network_state(net, state, strict=False)  # non-strict: the common keys are loaded
    torch.testing.assert_close(net[2].weight, state["2.weight"])
    with pytest.raises(ValueError, match=r"'2.weight': \[5, 3\] vs \[4, 3\]"):  # shapes must fit even then
        load_network_state(net, _net(out=5).state_dict(), strict=False)


def test_a_submodule_named_module_is_not_taken_for_a_wrapper(tmp_path):
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(2, 2)

    src = Holder()
    torch.save(src.state_dict(), tmp_path / "model.pt")  # keys "module.weight", "module.bias" of the network itself
    dst = load_trained_model(Holder(), str(tmp_path / "model.pt"))
    torch.testing.assert_close(dst.module.weight, src.module.weight)


def test_grid_extended_checkpoint_still_loads(tmp_path):
    """Shapes a module's own loading code adopts (KAN grid extension) are not refused by the checks."""
    from monai_kan.layers import KANLinear
    from monai_kan.tools.grid import extend_network_grids

    torch.manual_seed(0)
    src = nn.Sequential(KANLinear(3, 4, grid_size=5), KANLinear(4, 2, grid_size=5))
    extend_network_grids(src, 8)
    torch.save(nn.DataParallel(src).state_dict(), tmp_path / "model.pt")
    dst = nn.Sequential(KANLinear(3, 4, grid_size=5), KANLinear(4, 2, grid_size=5))
    load_trained_model(dst, str(tmp_path / "model.pt"))
    x = torch.rand(6, 3) * 2 - 1
    torch.testing.assert_close(dst(x), src(x))
    bad = nn.Sequential(KANLinear(3, 4, grid_size=5), KANLinear(4, 3, grid_size=5))
    before = _snapshot(bad)
    with pytest.raises(ValueError, match=r"'1.base_weight': \[2, 4\] vs \[3, 4\]"):
        load_trained_model(bad, str(tmp_path / "model.pt"))
    _assert_unchanged(bad, before)


# ----------------------------------------------------------------------------------------------- bundle helpers
def test_check_fresh_run_and_output_dir(tmp_path):
    check_fresh_run(str(tmp_path))
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--resume true"):
        check_fresh_run(str(tmp_path))
    check_fresh_run(str(tmp_path), resume=True)
    check_fresh_run(str(tmp_path), overwrite=True)
    with pytest.raises(ValueError, match="exclude each other"):
        check_fresh_run(str(tmp_path), resume=True, overwrite=True)
    out = tmp_path / "out"
    assert check_output_dir(str(out)) == str(out) and out.is_dir()
    (out / "a.nii.gz").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--overwrite true"):
        check_output_dir(str(out))
    check_output_dir(str(out), overwrite=True)


def test_choose_and_metrics_helpers():
    assert choose({"a": 1}, "a") == 1
    with pytest.raises(ValueError, match=r"`loss_name` must be one of \['a'\], got 'b'"):
        choose({"a": 1}, "b", "loss_name")
    metrics = per_class_metrics(["background", "organ", "tumor"])
    assert sorted(metrics) == ["val_dice_organ", "val_dice_tumor", "val_hd95", "val_hd95_organ", "val_hd95_tumor"]
    with pytest.raises(ValueError, match="class_names"):
        per_class_metrics(["background"])


def test_default_bundle_root(tmp_path, monkeypatch):
    bundle = tmp_path / "bundles" / "demo"
    (bundle / "configs").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert default_bundle_root("demo") == str(bundle)  # from the repository root
    monkeypatch.chdir(bundle)
    assert default_bundle_root("demo") == str(bundle)  # from the bundle folder
    other = tmp_path / "other"
    (other / "configs").mkdir(parents=True)
    monkeypatch.chdir(other)  # a bundle folder of another name is not taken for this one
    with pytest.raises(ValueError, match=r"cannot tell the folder of bundle 'demo' .* `--bundle_root <bundle folder>`"):
        default_bundle_root("demo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="bundles/other"):
        default_bundle_root("other")


def test_progress_bar_is_ignites_and_shows_the_loss():
    buf = io.StringIO()
    bar = ProgressBar(desc="train", file=buf)
    assert isinstance(bar, IgniteProgressBar)
    engine = Engine(lambda e, b: [{"loss": torch.tensor(1.5)}])
    bar.attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert "train" in buf.getvalue() and "loss=1.5" in buf.getvalue()
    off = Engine(lambda e, b: None)
    ProgressBar(enabled="false").attach(off)
    assert not off.has_event_handler(bar._close) and not off._event_handlers[Events.ITERATION_COMPLETED]


def test_final_validation_covers_the_last_epochs():
    from monai_kan.handlers import FinalValidation

    runs = []

    class _Validator:
        def run(self, epoch):
            runs.append(epoch)

    for max_epochs, expected in ((7, [7]), (10, []), (2, [2])):
        runs.clear()
        engine = Engine(lambda e, b: None)
        FinalValidation(_Validator(), interval=5).attach(engine)
        engine.run([0], max_epochs=max_epochs)
        assert runs == expected
    with pytest.raises(ValueError, match="interval"):
        FinalValidation(_Validator(), interval=0)


def test_as_bool_reads_command_line_flags():
    assert as_bool("true") and as_bool("True") and as_bool(True) and as_bool(1) and as_bool("yes")
    assert not as_bool("false") and not as_bool("False") and not as_bool(False) and not as_bool("0")
    with pytest.raises(ValueError, match="`resume` must be true or false, got 'maybe'"):
        as_bool("maybe", "resume")
    check_fresh_run("/nonexistent", resume="false", overwrite="false")
    assert ProgressBar(enabled="false").enabled is False
    assert CheckedCheckpointLoader("x.pt", {"n": nn.Linear(1, 1)}, enabled="False").enabled is False
    assert as_bool("  FALSE ") is False and as_bool("y") is True and as_bool(np.bool_(True)) is True
    for bad in ("maybe", "", None, 2, "on"):
        with pytest.raises(ValueError, match=f"`amp` must be true or false, got {re.escape(repr(bad))}"):
            as_bool(bad, "amp")


def test_check_output_dir_rejects_a_bad_flag_even_when_empty(tmp_path):
    with pytest.raises(ValueError, match="`overwrite` must be true or false, got 'maybe'"):
        check_output_dir(str(tmp_path / "new"), overwrite="maybe")
    assert not (tmp_path / "new").exists()
