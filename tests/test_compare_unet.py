"""scripts/compare_unet.py, the KM-UNet vs UNet protocol, without training: parameter matching, the MAC counter,
learning-rate selection on validation only, the cache that makes it resumable, the generated verdict and the README
writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from helpers import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("compare_unet")


def toy_task(script, name="toy"):
    net = {"_target_": "KMUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": "@num_classes",
           "channels": [4, 8, 16], "strides": [2, 2], "norm": "instance", "grid_size": 5, "spline_order": 3}
    return script.Task(name=name, dims=2, label="toy phantoms", epochs=2, val_interval=1,
                       class_names=["background", "organ", "tumor"], patch_size=[16, 16], data_args={},
                       network_def=net)


def lr_of(folder: Path) -> float:
    return float(folder.name.split("_")[0][2:])


class FakeRunner:
    """Stands in for the bundle: validation favours the smallest rate, the test split the largest (so a protocol
    that peeked at the test split would choose differently); KMUNet trains 5x longer than anything else."""

    def __init__(self, fail_after=None):
        self.calls = []
        self.fail_after = fail_after

    def _call(self, kind, folder):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls.append((kind, str(folder)))

    def train(self, task, net_def, lr, seed, epochs, folder):
        self._call("train", folder)
        kan = net_def["_target_"] == "KMUNet" and net_def.get("conv_type", "kan") == "kan"
        return {"train_loop_s": 50.0 if kan else 10.0, "best_val_mean_dice": 0.9 - lr, "peak_rss_mib": 500.0,
                "wall_s": 60.0, "epochs_run": epochs}

    def test(self, task, net_def, folder):
        self._call("test", folder)
        lr = lr_of(folder)
        d = 0.5 + lr + 0.01 * int(folder.name.split("seed")[1].split("_")[0])
        return {"dice": {"organ": d, "tumor": d - 0.1}, "mean_dice": d - 0.05, "test_cases": 2, "wall_s": 5.0}


# --- parameter matching and MACs --------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_widened_unet_matches_the_bundle_kmunet_parameters(script, dims):
    config = script.bundle_config(dims)
    base, n = config["network_def"], len(config["class_names"])
    target = sum(p.numel() for p in script.build_network(base, n).parameters())
    factor, channels, params = script.match_width(base, n, target)
    wide = script.build_network(script.arm_network_def("unet_wide", base, factor), n)
    assert sum(p.numel() for p in wide.parameters()) == params
    assert abs(params - target) / target < 0.05
    assert factor > 1 and all(w > c for w, c in zip(channels, base["channels"]))
    same = script.build_network(script.arm_network_def("unet", base), n)
    assert sum(p.numel() for p in same.parameters()) < 0.5 * target  # the unmatched UNet is much smaller
    with pytest.raises(ValueError, match="apart"):
        script.match_width(base, n, target, tolerance=1e-9)


def test_mac_counter_is_exact_on_known_convolutions(script):
    from monai_kan import KANConv

    assert script.count_macs(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10)) == 10 * 10 * 8 * 3 * 9
    # stride 2, batch 2: 2 * 4 * 4^3 outputs, 2 * 27 MACs each
    assert script.count_macs(nn.Conv3d(2, 4, 3, stride=2, padding=1), (2, 2, 8, 8, 8)) == 2 * 4 * 4 ** 3 * 2 * 27
    # transposed: every input element is spread over C_out * kernel outputs
    up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
    assert script.count_macs(up, (1, 4, 5, 5)) == 4 * 25 * 2 * 9
    assert script.count_macs(nn.Conv2d(4, 4, 3, padding=1, groups=2), (1, 4, 6, 6)) == 36 * 4 * 2 * 9
    # KAN conv: G + k control points and one base weight per edge and kernel offset
    kan = KANConv(2, 3, 5, kernel_size=3, grid_size=5, spline_order=3)
    assert script.count_macs(kan, (1, 3, 6, 6)) == 36 * 5 * 3 * 9 * (5 + 3 + 1)
    pure = KANConv(2, 3, 5, kernel_size=3, grid_size=4, spline_order=2, base_activation=None)
    assert script.count_macs(pure, (1, 3, 6, 6)) == 36 * 5 * 3 * 9 * (4 + 2)


def test_mac_counter_agrees_with_torch_flop_counter_on_monai_unet(script):
    from monai.networks.nets import UNet
    from torch.utils.flop_counter import FlopCounterMode

    net = UNet(2, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=2).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 1, 32, 32))
    assert 2 * script.count_macs(net, (1, 1, 32, 32)) == counter.get_total_flops()


# --- the protocol with a fake bundle --------------------------------------------------------------------------------


def test_learning_rate_is_chosen_on_validation_only(script, tmp_path):
    runner = FakeRunner()
    res = script.run_task(toy_task(script), runner, tmp_path, lrs=[0.001, 0.01], seeds=[0, 1], log=lambda m: None)
    for arm in script.SEARCHED_ARMS:
        assert res["arms"][arm]["lr"] == 0.001  # best validation; the test split would have said 0.01
        assert set(res["arms"][arm]["lr_search"]) == {"0.001", "0.01"}
    assert res["arms"]["unet_time"]["lr"] == res["arms"]["unet"]["lr"]
    tested = [Path(f) for kind, f in runner.calls if kind == "test"]
    assert len(tested) == len(script.ARMS) * 2  # every row, every seed, once
    assert all(lr_of(f) == 0.001 for f in tested)  # never a rate that was not chosen
    for arm in script.ARMS:  # an arm's test runs come after all of its trainings
        calls = [(k, i) for i, (k, f) in enumerate(runner.calls) if Path(f).parent.name == arm]
        assert max(i for k, i in calls if k == "train") < min(i for k, i in calls if k == "test")
    # (c): KMUNet trains 5x longer per run than the UNet of (a), so (c) gets 5x the epochs
    assert res["time_matched"]["epochs"] == res["arms"]["unet_time"]["epochs"] == 10
    assert script.select_lr({0.1: float("nan"), 0.2: 0.3, 0.3: 0.3}) == 0.2
    with pytest.raises(ValueError):
        script.select_lr({})


def test_cache_resumes_an_interrupted_protocol(script, tmp_path):
    lrs, seeds = [0.001, 0.003, 0.01], [0, 1, 2]
    full = FakeRunner()
    script.run_task(toy_task(script, "full"), full, tmp_path, lrs=lrs, seeds=seeds, log=lambda m: None)
    assert len(full.calls) == 4 * (3 + 2) + 3 + 5 * 3  # searched trainings, (c) trainings, tests

    first = FakeRunner(fail_after=11)
    with pytest.raises(KeyboardInterrupt):
        script.run_task(toy_task(script), first, tmp_path, lrs=lrs, seeds=seeds, log=lambda m: None)
    second = FakeRunner()
    res = script.run_task(toy_task(script), second, tmp_path, lrs=lrs, seeds=seeds, log=lambda m: None)
    assert len(first.calls) == 11 and not set(first.calls) & set(second.calls)  # nothing finished runs twice
    assert len(first.calls) + len(second.calls) == len(full.calls)
    third = FakeRunner()
    again = script.run_task(toy_task(script), third, tmp_path, lrs=lrs, seeds=seeds, log=lambda m: None)
    assert third.calls == [] and again["arms"] == res["arms"]
    assert not list(tmp_path.rglob("*.tmp"))

    # a cached run with other settings is redone
    calls = []
    path = tmp_path / "r.json"
    assert script.cached_json(path, {"epochs": 2}, lambda: calls.append(1) or {"x": 1}) == {"x": 1}
    assert script.cached_json(path, {"epochs": 2}, lambda: calls.append(1) or {"x": 2}) == {"x": 1}
    assert script.cached_json(path, {"epochs": 3}, lambda: calls.append(1) or {"x": 3}) == {"x": 3}
    assert len(calls) == 2


# --- the generated verdict and the README ---------------------------------------------------------------------------


def rows(script, kmunet=(0.70, 0.80), unet=(0.80, 0.78), std=0.01):
    def row(label, organ, tumor, params, macs, train_s):
        return {"label": label, "lr": 0.003, "epochs": 5, "parameters": params, "macs_per_voxel": macs,
                "n_seeds": 3, "dice": {"organ": (organ, std), "tumor": (tumor, std)},
                "mean_dice": ((organ + tumor) / 2, std), "train_s": (train_s, 1.0), "peak_mib": (500.0, 1.0)}

    return {"kmunet": row("KMUNet (bundle default)", *kmunet, 1000, 9000.0, 300.0),
            "unet": row("(a) UNet, same channels", *unet, 200, 1000.0, 60.0),
            "kmunet_plain": row("(d) KMUNet topology, plain convolutions", kmunet[0] - 0.005, kmunet[1] - 0.1,
                                150, 1000.0, 100.0)}


def test_verdict_says_where_kmunet_loses(script):
    text = script.verdict(rows(script), ["background", "organ", "tumor"])
    assert "**Where KMUNet loses:** on test Dice to (a) UNet, same channels on Dice organ (0.800 vs KMUNet's 0.700)" \
        in text
    assert "tumor (0.780" not in text  # KMUNet is better on tumor: not a loss
    assert "mean Dice (0.790 vs KMUNet's 0.750)" in text
    assert "(d) KMUNet topology" not in text.split("On cost")[0]  # (d) is worse everywhere
    assert "5.0x the parameters, 9.0x the MACs per voxel, 5.0x the train time of (a)" in text
    assert "6.7x the parameters, 9.0x the MACs per voxel, 3.0x the train time of (d)" in text
    assert "KMUNet has the best Dice tumor of all rows." in text

    close = script.verdict(rows(script, unet=(0.705, 0.70), std=0.02), ["background", "organ", "tumor"])
    assert "Dice organ (0.705 vs KMUNet's 0.700, within the seed spread)" in close
    wins = script.verdict(rows(script, unet=(0.60, 0.60)), ["background", "organ", "tumor"])
    assert "to none of the baselines here" in wins
    assert "best Dice organ, Dice tumor, mean Dice of all rows" in wins
    assert "No row segments" not in text + close + wins
    none = script.verdict(rows(script, kmunet=(0.01, 0.002), unet=(0.02, 0.001)), ["background", "organ", "tumor"])
    assert none.startswith("**No row segments this set at this budget** (best mean test Dice 0.011, below 0.05)")


def test_readme_tables_are_written_between_the_markers(script, tmp_path):
    res = script.run_task(toy_task(script), FakeRunner(), tmp_path / "work", lrs=[0.001, 0.01], seeds=[0, 1, 2],
                          log=lambda m: None)
    res["command"] = "python scripts/compare_unet.py --tasks toy"
    readme = tmp_path / "README.md"
    readme.write_text("# bundle\n\nbefore\n<!-- comparison:start -->\nold table\n<!-- comparison:end -->\nafter\n")
    targets = script.readme_targets(["2d=" + str(readme)])
    assert script.write_readmes({"toy": res}, targets, "test CPU") == [readme]
    text = readme.read_text()
    assert text.startswith("# bundle\n\nbefore\n<!-- comparison:start -->\n") and text.endswith(
        "<!-- comparison:end -->\nafter\n")
    assert "old table" not in text
    assert ("| model | lr | parameters | MACs/voxel | train time | CPU time | peak memory | Dice organ | Dice tumor "
            "| mean Dice |") in text
    for label in ("KMUNet (bundle default)", "(a) UNet, same channels", "(b) UNet, channels x",
                  "(c) UNet, same channels, 10 epochs (train time matched)", "(d) KMUNet topology, plain convolutions"):
        assert f"| {label}" in text
    # seeds 0, 1, 2 at lr 0.001: organ Dice 0.501, 0.511, 0.521
    assert "| 0.511 ± 0.010 |" in text
    assert "**Where KMUNet loses:**" in text and "`python scripts/compare_unet.py --tasks toy`" in text
    assert "load" not in text.split("| model |")[0].split("\n\n")[-1]  # the fake runs record no load
    for arm in res["arms"].values():
        for i, run in enumerate(arm["seeds"].values()):
            run["train"]["load_avg"] = 1.0 + i
    script.write_readmes({"toy": res}, targets, "test CPU")
    assert " h, load 2.0 (max 3.0)\n" in readme.read_text()  # each table's own load in its caption
    assert json.loads(json.dumps(res)) == res  # results.json round trip
    assert script.write_readmes({"toy": res}, {3: readme}, "test CPU") == []  # no 3D results: nothing written
    assert set(script.readme_targets(["bundles"])) == {2, 3}
    with pytest.raises(ValueError, match="--readme"):
        script.readme_targets(["4d=x"])


# --- issue 10, item 5: KMUNet's training variants --------------------------------------------------------------------


class FakeVariantRunner(FakeRunner):
    """A bundle that takes a variant's overrides and configs; low rank scores higher on validation."""

    def __init__(self, fail_after=None):
        super().__init__(fail_after)
        self.extras = {}

    def train(self, task, net_def, lr, seed, epochs, folder, overrides=None, configs=()):
        record = super().train(task, net_def, lr, seed, epochs, folder)
        self.extras[Path(folder).parent.name] = (dict(overrides or {}), list(configs))
        record["best_val_mean_dice"] += 0.01 * (net_def.get("rank") or 0)
        return record


def test_variant_definitions(script):
    assert list(script.VARIANTS)[0] == "default"
    for dims in (2, 3):
        config = script.bundle_config(dims)
        base, n = config["network_def"], len(config["class_names"])
        grid = script.grid_update_config(dims)
        assert [h["_target_"].rsplit(".", 1)[-1] for h in grid["+train#handlers"]] == ["KANGridHandler"]
        assert grid["kan_grid_update_every"] > 0 and "loss" not in grid  # only the grid update, no regulariser
        for name, variant in script.VARIANTS.items():
            run = script.variant_run(name, base, dims)
            assert run["row"] == ("kmunet" if name == "default" else f"kmunet_{name}")
            assert run["network_def"] == {**base, **variant.network}  # KMUNet's network_def, changed only there
            assert bool(run["configs"]) == variant.grid_update and run["overrides"] == variant.overrides
            assert set(run["overrides"]) <= set(config)  # overrides name ids of train.json
            script.build_network(run["network_def"], n)  # every variant builds as the bundle would
        assert script.variant_run("default", base, dims)["network_def"] == base
    with pytest.raises(ValueError, match="unknown variant"):
        script.variant_run("rank7", base, 3)


def test_variant_costs_are_counted_by_the_layers(script):
    from monai_kan import KANConv

    low = KANConv(2, 3, 5, kernel_size=3, grid_size=5, spline_order=3, rank=2)
    # per output element (1 + r) per edge and kernel offset, plus r (G + k) per input element for the shared functions
    assert script.count_macs(low, (1, 3, 6, 6)) == 36 * 5 * 3 * 9 * (1 + 2) + 36 * 3 * 2 * 8
    task = toy_task(script)
    stats = {name: script.network_stats(script.variant_run(name, task.network_def, 2)["network_def"], 3,
                                        task.patch_size) for name in ("default", "rank1", "rank2", "init_zero")}
    assert stats["rank1"]["parameters"] < stats["rank2"]["parameters"] < stats["default"]["parameters"]
    assert stats["rank1"]["macs_per_voxel"] < stats["rank2"]["macs_per_voxel"] < 0.5 * stats["default"]["macs_per_voxel"]
    assert stats["init_zero"] == stats["default"]


def test_variants_reuse_the_protocol_kmunet_runs_and_never_test(script, tmp_path):
    task = toy_task(script)
    script.run_task(task, FakeRunner(), tmp_path, lrs=[0.001, 0.01], seeds=[0], log=lambda m: None)
    runner = FakeVariantRunner()
    res = script.run_variants(task, runner, tmp_path, names=["rank1", "grid_update", "spline_lr_10"],
                              lrs=[0.001, 0.01], seeds=[0], log=lambda m: None)
    assert res["lr"] == 0.001 and res["lr_search"] == {"0.001": 0.899, "0.01": 0.89}  # validation, first seed
    assert list(res["variants"]) == ["default", "rank1", "grid_update", "spline_lr_10"]
    # the default and the rate search are the protocol's cached KMUNet runs; the variants train once each
    assert [Path(f).parent.name for _, f in runner.calls] == ["kmunet_rank1", "kmunet_grid_update",
                                                               "kmunet_spline_lr_10"]
    assert all(kind == "train" for kind, _ in runner.calls)  # the test split is never evaluated
    assert all(Path(f).name == "lr0.001_seed0_ep2" for _, f in runner.calls)
    assert runner.extras["kmunet_spline_lr_10"] == ({"spline_lr_scale": 10.0}, [])
    assert runner.extras["kmunet_grid_update"][1] == [script.grid_update_config(2)]
    assert res["variants"]["rank1"]["network_def"]["rank"] == 1
    # cached: an interrupted variant run resumes, a finished one is not redone
    again = FakeVariantRunner()
    assert script.run_variants(task, again, tmp_path, names=["rank1", "rank2"], lr=0.001,
                               seeds=[0], log=lambda m: None)["variants"]["rank1"] == res["variants"]["rank1"]
    assert [Path(f).parent.name for _, f in again.calls] == ["kmunet_rank2"]

    res["command"] = "python scripts/compare_unet.py --variants"
    text = script.render_variants(json.loads(json.dumps(res)), "a CPU")
    assert ("| variant | parameters | MACs/voxel | train time (wall) | CPU time | load | validation mean Dice | "
            "Δ vs default |") in text
    assert "| `rank1`: low-rank KAN convs, r = 1 |" in text and "| +0.010 |" in text
    assert "**Better than the default on validation:** `rank1` (+0.010" in text
    assert "test" not in text.replace("the test split is not used", "")
    doc = tmp_path / "variants.md"
    doc.write_text(f"# v\n{script.VARIANT_START}\nold\n{script.VARIANT_END}\n")
    from _bundle_runs import write_between_markers

    write_between_markers(doc, script.VARIANT_START, script.VARIANT_END, text)
    assert "old" not in doc.read_text() and "| `grid_update`" in doc.read_text()

    # a one-seed gain within the default's seed range (the protocol's KMUNet seeds) is called so
    protocol = {task.name: {"arms": {"kmunet": {"lr": 0.001, "seeds": {
        "0": {"train": {"best_val_mean_dice": 0.899}}, "1": {"train": {"best_val_mean_dice": 0.95}}}}}}}
    assert script.protocol_seed_spread(protocol, task.name, 0.01) is None  # another rate: no yardstick
    spread = script.protocol_seed_spread(protocol, task.name, 0.001)
    assert spread == {"seeds": {"0": 0.899, "1": 0.95}, "lr": 0.001}
    text = script.render_variants(dict(json.loads(json.dumps(res)), seed_spread=spread), "a CPU")
    assert "`rank1` (+0.010" in text and "within the default's seed range)" in text
    assert "validation mean Dice 0.899, 0.950, a range of 0.051" in text


def test_variant_runs_of_other_seeds_keep_their_own_slot(script):
    assert script.variant_slot("synthetic3d", [0]) == ("synthetic3d", script.VARIANT_START, script.VARIANT_END)
    key, start, end = script.variant_slot("synthetic3d", [0, 1, 2])
    assert key == "synthetic3d:seeds=0,1,2"
    assert start == "<!-- kmunet-variants:seeds=0,1,2:start -->" and end == "<!-- kmunet-variants:seeds=0,1,2:end -->"


def test_variants_command_line(script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.main(["--variants", "--tasks", "synthetic2d,synthetic3d", "--work", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--variants", "rank9", "--work", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--variants-doc", str(tmp_path / "x.md"), "--work", str(tmp_path)])
    assert script.main(["--variants", "--write-only", "--work", str(tmp_path)]) == 1  # nothing measured yet
