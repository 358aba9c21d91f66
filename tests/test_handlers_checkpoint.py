"""Atomic checkpoints, best-model saving, resume after an interruption, and the trained-model guard."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from monai_kan.handlers import (
    BestModelSaver,
    as_bool,
    ProgressBar,
    TrainedModelLoader,
    TrainingResumer,
    TrainingStateSaver,
    atomic_save,
    check_fresh_run,
    check_output_dir,
    choose,
    find_bundle_root,
    load_trained_model,
    per_class_metrics,
)
from monai_kan.handlers.checkpoint import load_network_state


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_atomic_save_replaces_or_keeps(tmp_path):
    path = tmp_path / "sub" / "model.pt"
    atomic_save({"a": torch.ones(2)}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"a": _Unpicklable()}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))  # old file intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temp file left


def _metric_engine(values):
    """An engine whose epoch e reports key metric values[e - 1]."""
    engine = Engine(lambda e, b: None)
    engine.state.key_metric_name = "dice"

    @engine.on(Events.EPOCH_COMPLETED)
    def _set(e):
        e.state.metrics["dice"] = values[e.state.epoch - 1]

    return engine


def test_best_model_saver(tmp_path):
    net = nn.Linear(2, 2)
    saver = BestModelSaver(str(tmp_path), nn.DataParallel(net))  # wrapper is unwrapped in the file
    engine = _metric_engine([0.5, float("nan"), 0.4, 0.7])
    # attach after the metric setter so the saver sees this epoch's value
    saver.attach(engine)
    written = []

    @engine.on(Events.EPOCH_COMPLETED)
    def _record(e):
        written.append(os.path.getmtime(tmp_path / "model.pt") if (tmp_path / "model.pt").exists() else None)
        with torch.no_grad():
            net.weight.add_(1.0)  # change the weights every epoch

    engine.run([0], max_epochs=4)
    assert saver.best_score == pytest.approx(0.7) and saver.best_epoch == 4
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert set(state) == {"weight", "bias"}  # plain state_dict, no "module." prefix
    # restored best state: a worse score after resume does not overwrite
    other = BestModelSaver(str(tmp_path), net)
    other.load_state_dict(saver.state_dict())
    assert other.best_score == pytest.approx(0.7)


def test_best_model_saver_rejects_missing_metric(tmp_path):
    engine = Engine(lambda e, b: None)
    BestModelSaver(str(tmp_path), nn.Linear(1, 1), key_metric_name="dice").attach(engine)
    with pytest.raises(ValueError, match="expected key metric 'dice'"):
        engine.run([0], max_epochs=1)


def _train_setup(tmp_path, stop_at_epoch=None, resume=False, max_epochs=5):
    """A tiny regression trainer with state saver and resumer; optionally 'crashes' when an epoch starts."""
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    data = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(3)]

    def step(engine, batch):
        opt.zero_grad()
        loss = ((net(batch[0]) - batch[1]) ** 2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    trainer = Engine(step)
    seen = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.epoch))
    if stop_at_epoch is not None:
        @trainer.on(Events.EPOCH_STARTED)
        def _crash(e):
            if e.state.epoch == stop_at_epoch:
                raise KeyboardInterrupt("simulated interruption")

    TrainingStateSaver(str(tmp_path), {"network": net, "optimizer": opt}).attach(trainer)
    TrainingResumer(str(tmp_path / "checkpoint_last.pt"), {"network": net, "optimizer": opt},
                    enabled=resume).attach(trainer)
    return trainer, data, net, seen, max_epochs


def test_resume_after_interruption_keeps_completed_epochs(tmp_path):
    trainer, data, _, seen, max_epochs = _train_setup(tmp_path, stop_at_epoch=3)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(data, max_epochs=max_epochs)
    assert seen == [1, 2, 3]
    saved = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == 2 * len(data)  # epochs 1 and 2 complete

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


def test_resume_can_extend_epochs(tmp_path):
    trainer, data, _, _, _ = _train_setup(tmp_path)
    trainer.run(data, max_epochs=2)
    trainer, data, _, seen, _ = _train_setup(tmp_path, resume=True)
    trainer.run(data, max_epochs=4)
    assert seen == [3, 4]


def test_resume_without_checkpoint_fails(tmp_path):
    trainer, data, _, _, _ = _train_setup(tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match="resume was requested but there is no training state"):
        trainer.run(data, max_epochs=1)


def test_state_saver_rejects_bad_args(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        TrainingStateSaver(str(tmp_path), {})
    with pytest.raises(ValueError, match="must not use the name 'trainer'"):
        TrainingStateSaver(str(tmp_path), {"trainer": nn.Linear(1, 1)})
    with pytest.raises(ValueError, match="interval"):
        TrainingStateSaver(str(tmp_path), {"n": nn.Linear(1, 1)}, interval=0)


def test_load_trained_model(tmp_path):
    net = nn.Linear(2, 3)
    with pytest.raises(FileNotFoundError, match="no trained model at .*missing.pt: inference with untrained"):
        load_trained_model(net, str(tmp_path / "missing.pt"))
    src = nn.Linear(2, 3)
    torch.save(src.state_dict(), tmp_path / "model.pt")
    load_trained_model(net, str(tmp_path / "model.pt"))
    torch.testing.assert_close(net.weight, src.weight)
    torch.save({"network": src.state_dict(), "optimizer": {}}, tmp_path / "last.pt")
    load_trained_model(nn.Linear(2, 3), str(tmp_path / "last.pt"))
    with pytest.raises(ValueError, match="does not fit the configured network"):
        load_trained_model(nn.Linear(2, 4), str(tmp_path / "model.pt"))
    engine = Engine(lambda e, b: None)
    TrainedModelLoader(str(tmp_path / "missing.pt"), net).attach(engine)
    with pytest.raises(FileNotFoundError):
        engine.run([0], max_epochs=1)


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
    # the handler form and a training checkpoint ({"network": state_dict}) take the same way
    torch.save({"network": _wrap(src, saved_from).state_dict()}, tmp_path / "last.pt")
    dst = _net()
    engine = Engine(lambda e, b: None)
    TrainedModelLoader(str(tmp_path / "last.pt"), _wrap(dst, loaded_into)).attach(engine)
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
    TrainingResumer(str(tmp_path / "checkpoint_last.pt"),
                    {"network": nn.DataParallel(dst), "optimizer": torch.optim.SGD(dst.parameters(), lr=0.1)}
                    ).attach(trainer)
    trainer.run([0], max_epochs=2)
    assert trainer.state.epoch == 2
    torch.testing.assert_close(dst[0].weight, src[0].weight)


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


def test_failed_resume_changes_nothing(tmp_path):
    src = _net(out=5)
    torch.save({"network": src.state_dict(), "optimizer": torch.optim.SGD(src.parameters(), lr=0.5).state_dict(),
                "trainer": {"epoch_length": 1, "max_epochs": 3, "iteration": 3}}, tmp_path / "checkpoint_last.pt")
    net = _net(out=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = _snapshot(net)
    trainer = Engine(lambda e, b: None)
    TrainingResumer(str(tmp_path / "checkpoint_last.pt"), {"network": net, "optimizer": opt}).attach(trainer)
    with pytest.raises(ValueError, match=r"checkpoint_last.pt \('network'\) does not fit .* '2.bias': \[5\] vs \[4\]"):
        trainer.run([0], max_epochs=4)
    _assert_unchanged(net, before)
    assert opt.param_groups[0]["lr"] == 0.1  # nothing else restored either


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


def test_find_bundle_root(tmp_path, monkeypatch):
    bundle = tmp_path / "bundles" / "demo"
    (bundle / "configs").mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", ["x"])
    monkeypatch.chdir(tmp_path)
    assert find_bundle_root("demo") == str(bundle)  # from the repository root
    monkeypatch.chdir(bundle)
    assert find_bundle_root("demo") == str(bundle)  # from the bundle folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x", "--config_file", "['bundles/demo/configs/train.json']"])
    assert find_bundle_root() == str(bundle)  # from the command line
    monkeypatch.setattr(sys, "argv", ["x"])
    with pytest.raises(ValueError, match="cannot find the folder of bundle 'other'"):
        find_bundle_root("other")


def test_progress_bar_can_be_disabled():
    engine = Engine(lambda e, b: [{"loss": torch.tensor(1.0)}])
    ProgressBar(enabled=False).attach(engine)
    ProgressBar(enabled=True).attach(engine)
    engine.run([0, 1], max_epochs=1)


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
    assert as_bool("  FALSE ") is False and as_bool("y") is True and as_bool(np.bool_(True)) is True
    for bad in ("maybe", "", None, 2, "on"):
        with pytest.raises(ValueError, match=f"`amp` must be true or false, got {re.escape(repr(bad))}"):
            as_bool(bad, "amp")


def test_check_output_dir_rejects_a_bad_flag_even_when_empty(tmp_path):
    with pytest.raises(ValueError, match="`overwrite` must be true or false, got 'maybe'"):
        check_output_dir(str(tmp_path / "new"), overwrite="maybe")
    assert not (tmp_path / "new").exists()
