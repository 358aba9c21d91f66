"""KAN grid and TensorBoard spline handlers in tiny ignite runs (MONAI SupervisedTrainer), and from a config."""

import glob
import logging
import os

import pytest
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss

from monai_kan.handlers.kan_grid import KANGridHandler
from monai_kan.handlers.kan_tensorboard import KANSplineTensorBoardHandler
from monai_kan.networks import KMUNet


def _trainer(net, handlers, epochs=1, n=6):
    torch.manual_seed(0)
    data = [{"image": torch.randn(2, 1, 16, 16), "label": (torch.rand(2, 1, 16, 16) > 0.5).float()} for _ in range(n)]
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=data, network=net, optimizer=opt,
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True), train_handlers=handlers,
    )
    return trainer, opt


def _net():
    torch.manual_seed(0)
    return KMUNet(2, 1, 2, channels=(4, 8), strides=(2,))


def test_grid_handler_updates_then_extends():
    net = _net()
    handler = KANGridHandler(net, update_every=2, update_until=4, extend_at={"5": 8})
    trainer, opt = _trainer(net, [handler])
    knots0 = net.head[1].knots.clone()
    trainer.run()  # iteration 6 trains after the extension: the optimizer has the new parameters
    assert [(c, a) for c, a, _, _ in handler.history] == [(2, "update"), (4, "update"), (5, "extend")]
    head = net.head[1]
    assert head.grid_size == 8 and head.knots.shape[1] == 8 + 7 and not torch.equal(head.knots[:, :3], knots0[:, :3])
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert params == {id(p) for p in net.parameters()}
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_grid_handler_epoch_level_and_stop():
    net = _net()
    handler = KANGridHandler(net, update_every=1, update_until=2, epoch_level=True)
    trainer, _ = _trainer(net, [handler], epochs=3, n=2)
    trainer.run()
    assert [(c, a) for c, a, _, _ in handler.history] == [(1, "update"), (2, "update")]
    assert not net.head[1].uniform_grid


def test_grid_handler_reports_worst_edge_and_max_error_blocks_it(caplog):
    net = _net()
    knots = {n: m.knots.clone() for n, m in net.named_modules() if hasattr(m, "knots")}
    handler = KANGridHandler(net, update_every=2, max_error=1e-9, logger_name="kan_grid_test")
    trainer, _ = _trainer(net, [handler], epochs=1, n=2)
    with caplog.at_level(logging.INFO, logger="kan_grid_test"):
        trainer.run()
    (count, action, worst, worst_edge), = handler.history
    assert (count, action) == (2, "update") and worst_edge > 1e-9 and worst > 0
    message = next(r.getMessage() for r in caplog.records if r.name == "kan_grid_test")
    assert f"of a single edge {worst_edge:.3g}" in message and "4 skipped (max_error)" in message
    assert all(torch.equal(m.knots, knots[n]) for n, m in net.named_modules() if hasattr(m, "knots"))


def test_grid_handler_from_config():
    config = {
        "imports": ["$import monai_kan"],
        "network": {"_target_": "KMUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                    "channels": [4, 8], "strides": [2]},
        "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 1e-3},
        "handler": {"_target_": "monai_kan.handlers.kan_grid.KANGridHandler", "network": "@network",
                    "optimizer": "@optimizer", "update_every": 5, "update_until": 50, "extend_at": {"100": 10}},
    }
    handler = ConfigParser(config).get_parsed_content("handler")
    assert handler.extend_at == {100: 10} and handler.update_every == 5
    with pytest.raises(ValueError, match="no B-spline KAN layers"):
        KANGridHandler(torch.nn.Linear(2, 2))


def test_tensorboard_spline_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    net = _net()
    tb = KANSplineTensorBoardHandler(net, log_dir=str(tmp_path), interval=1, top_k=4)
    assert tb.layers == ["encoders.0.conv", "head.1"]
    trainer, _ = _trainer(net, [tb], epochs=1, n=2)
    trainer.run()
    files = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    assert files
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()["images"]
    assert {"kan_splines/head.1", "kan_splines/encoders.0.conv", "kan_splines/importance"} <= set(tags)
    img = acc.Images("kan_splines/head.1")[0]
    assert img.step == 1 and img.width > 300 and img.height > 200
    assert tb._writer is None  # the internal writer was closed when training completed
    with pytest.raises(ValueError, match="match none"):
        KANSplineTensorBoardHandler(net, layers=["nope"])


def test_tensorboard_spline_writer_handling(tmp_path):
    from monai.handlers import TensorBoardHandler

    net = _net()
    quiet = KANSplineTensorBoardHandler(net, log_dir=str(tmp_path / "never"), interval=5)
    assert isinstance(quiet, TensorBoardHandler)
    trainer, _ = _trainer(net, [quiet], epochs=1, n=2)
    trainer.run()  # no epoch 5: nothing logged, so no writer and no folder
    assert not (tmp_path / "never").exists()

    class _Writer:
        closed, images = False, 0

        def add_image(self, *a, **k):
            self.images += 1

        def flush(self):
            pass

        def close(self):
            self.closed = True

    given = _Writer()
    tb = KANSplineTensorBoardHandler(net, summary_writer=given, interval=1)
    trainer, _ = _trainer(net, [tb], epochs=2, n=2)
    trainer.run()
    assert given.images == 2 * 3 and not given.closed  # a writer passed in belongs to the caller

    tb = KANSplineTensorBoardHandler(net, log_dir=str(tmp_path / "own"), interval=1)
    trainer, _ = _trainer(net, [tb], epochs=1, n=2)
    trainer.run()
    assert tb.internal_writer and tb._writer is None and list((tmp_path / "own").glob("events.out.tfevents.*"))
    trainer.run()  # a second run opens a new writer and closes it again
    assert tb._writer is None and len(list((tmp_path / "own").glob("events.out.tfevents.*"))) == 2


@pytest.mark.parametrize("bundle", ["kmunet_2d_segmentation", "kmunet_3d_segmentation"])
def test_bundle_kan_tools_override_parses(bundle):
    root = os.path.join(os.path.dirname(__file__), "..", "bundles", bundle)
    files = [os.path.join(root, "configs", f) for f in ("train.json", "kan_tools.json")]
    if not all(os.path.isfile(f) for f in files):
        pytest.skip(f"{bundle} has no train.json/kan_tools.json")
    parser = ConfigParser()
    parser.read_config(files)  # "+train#handlers" appends to train.json's handler list
    targets = [h.get("_target_") for h in parser["train"]["handlers"] if isinstance(h, dict)]
    assert targets[-2:] == ["monai_kan.handlers.kan_grid.KANGridHandler",
                            "monai_kan.handlers.kan_tensorboard.KANSplineTensorBoardHandler"]
    assert "monai_kan.handlers.ProgressBar" in targets  # the bundle's own handlers are kept
    loss = parser.get_parsed_content("loss")
    assert type(loss).__name__ == "KANRegularizedLoss" and type(loss.loss).__name__ == "DiceCELoss"
