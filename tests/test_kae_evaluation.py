"""KAE evaluation suite: metrics on inputs with known answers, protocol, report and the benchmark script."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.kae_protocol import (
    MODEL_SPECS,
    PAPER_MODELS,
    ProtocolConfig,
    add_gaussian_noise,
    add_salt_and_pepper_noise,
    build_model,
    class_balanced_subset,
    count_parameters,
    evaluate_autoencoder,
    flatten_splits,
    make_blob_images,
    nearest_neighbor_accuracy,
    pairwise_sq_distances,
    paper_value,
    pending_tasks,
    recall_at_k,
    reconstruction_mse,
    render_report,
    run_protocol,
    select_configuration,
    train_autoencoder,
)
from helpers import load_script


# ---------------------------------------------------------------------------------------------------- metrics
def test_reconstruction_mse_known_values():
    assert reconstruction_mse(torch.zeros(4, 3), torch.ones(4, 3)) == pytest.approx(1.0)
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert reconstruction_mse(x, x) == 0.0
    assert reconstruction_mse(x, x + torch.tensor([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(0.25)
    assert reconstruction_mse(x.view(4), x) == 0.0  # only the element count has to agree
    with pytest.raises(ValueError, match="reconstruction"):
        reconstruction_mse(torch.zeros(3), torch.zeros(4))


def test_pairwise_sq_distances_matches_cdist():
    a, b = torch.randn(7, 5, dtype=torch.double), torch.randn(4, 5, dtype=torch.double)
    torch.testing.assert_close(pairwise_sq_distances(a, b), torch.cdist(a, b).square())
    with pytest.raises(ValueError):
        pairwise_sq_distances(a, torch.randn(4, 3))


def test_recall_identity_and_isometries_are_perfect():
    x = torch.rand(200, 30)
    assert recall_at_k(x, x, k=10) == 1.0
    assert recall_at_k(x, x, k=10, exclude_self=True) == 1.0
    assert recall_at_k(x, 3.0 * x[:, torch.randperm(30)] + 1.0, k=10) == 1.0  # scaled, permuted, shifted


def test_recall_hand_computed():
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    z = torch.tensor([[0.0], [10.0], [1.0], [11.0]])  # pairs swapped: every neighbour list loses its partner
    assert recall_at_k(x, z, k=2) == pytest.approx(0.5)  # self found, partner not
    assert recall_at_k(x, z, k=1, exclude_self=True) == 0.0
    assert recall_at_k(x, z, k=2, n_retrieved=4) == 1.0  # retrieving everything finds everything


def test_recall_of_unrelated_codes_is_low_and_args_checked():
    gen = torch.Generator().manual_seed(0)
    x, z = torch.rand(300, 20, generator=gen), torch.rand(300, 4, generator=gen)
    assert recall_at_k(x, z, k=10, exclude_self=True) < 0.15  # chance is about 10 / 299
    with pytest.raises(ValueError, match="k"):
        recall_at_k(x, z, k=0)
    with pytest.raises(ValueError, match="samples"):
        recall_at_k(x, z[:10])


def test_class_balanced_subset_known_answer():
    """The authors' search set: the first n of every class in storage order (RetrieverPack.get_x)."""
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 1, 1, 0, 2])
    assert class_balanced_subset(labels, 2).tolist() == [0, 2, 1, 4, 3, 6]  # classes in order of first appearance
    assert class_balanced_subset(labels, 1).tolist() == [0, 1, 3]
    assert sorted(class_balanced_subset(labels, 10).tolist()) == list(range(10))  # small classes give all
    with pytest.raises(ValueError, match="per_class"):
        class_balanced_subset(labels, 0)
    with pytest.raises(ValueError, match="1D"):
        class_balanced_subset(labels.view(2, 5), 1)


def test_recall_variants_known_answers():
    """Hand-checked cases for each choice the report varies: inclusion of the query, distance, scale."""
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    z = torch.tensor([[0.0], [1.0], [7.0], [3.0]])  # the two far points swapped
    # k = 2, query included: truth {0,1} {1,0} {2,1} {3,2}, retrieved {0,1} {1,0} {2,3} {3,1}
    assert recall_at_k(x, z, k=2) == pytest.approx((2 + 2 + 1 + 1) / 8)
    # query excluded, k = 1: nearest other point 1, 0, 1, 2 in pixels vs 1, 0, 3, 1 in the codes
    assert recall_at_k(x, z, k=1, exclude_self=True) == pytest.approx(2 / 4)
    # a query always finds itself: with k = 1 and the query included, any encoder of distinct points scores 1
    assert recall_at_k(x, -z ** 3, k=1) == 1.0
    # cosine on unit-normalised rows: directions at 0, 10, 80, 90 degrees; codes at 0, 80, 10, 90
    deg = torch.tensor([0.0, 10.0, 80.0, 90.0]) * torch.pi / 180
    xa = torch.stack([deg.cos(), deg.sin()], 1) * torch.tensor([[1.0], [5.0], [2.0], [9.0]])  # lengths differ
    za = torch.stack([deg[[0, 2, 1, 3]].cos(), deg[[0, 2, 1, 3]].sin()], 1)
    unit = torch.nn.functional.normalize
    # truth (cosine): {0,1} {1,0} {2,3} {3,2}; retrieved: codes of 1 and 2 swapped -> {0,2} {1,3} {2,0} {3,1}
    assert recall_at_k(unit(xa, dim=1), unit(za, dim=1), k=2) == pytest.approx(4 / 8)


def test_nearest_neighbor_separable_clusters_is_perfect():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    labels = torch.arange(4).repeat_interleave(25)
    ref = centres[labels] + 0.5 * torch.randn(100, 2, generator=gen)
    query = centres[labels] + 0.5 * torch.randn(100, 2, generator=gen)
    assert nearest_neighbor_accuracy(ref, labels, query, labels, chunk_size=7) == 1.0
    assert nearest_neighbor_accuracy(ref, labels, query, (labels + 1) % 4) == 0.0
    with pytest.raises(ValueError):
        nearest_neighbor_accuracy(ref, labels[:5], query, labels)


def test_gaussian_noise():
    x = torch.full((200, 500), 0.5)
    assert torch.equal(add_gaussian_noise(x, 0.0), x)
    noisy = add_gaussian_noise(x, 0.1, torch.Generator().manual_seed(0))
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.02)
    assert abs((noisy - x).mean().item()) < 1e-3
    with pytest.raises(ValueError, match="std"):
        add_gaussian_noise(x, -1.0)


def test_salt_and_pepper_noise():
    x = torch.full((200, 500), 0.5)
    assert torch.equal(add_salt_and_pepper_noise(x, 0.0), x)
    noisy = add_salt_and_pepper_noise(x, 0.05, torch.Generator().manual_seed(0))
    assert (noisy == 0).float().mean().item() == pytest.approx(0.05, abs=0.003)
    assert (noisy == 1).float().mean().item() == pytest.approx(0.05, abs=0.003)
    assert set(noisy.unique().tolist()) == {0.0, 0.5, 1.0}
    # denoising score of a perfect identity against the clean image: 0.25 per changed pixel, 10% changed
    assert reconstruction_mse(noisy, x) == pytest.approx(0.025, abs=0.002)
    with pytest.raises(ValueError, match="prob"):
        add_salt_and_pepper_noise(x, 0.7)


# ---------------------------------------------------------------------------------------------------- models
def test_model_specs_and_parameter_counts():
    assert PAPER_MODELS == ["ae", "kan", "fourierkan", "wavkan", "kae1", "kae2", "kae3"]
    expected = {  # 784-16-784, as in the paper's Fig. 4 where it gives them
        "ae": 784 * 16 + 16 + 16 * 784 + 784,
        "kan": 2 * 784 * 16 * (1 + 8 + 1),  # base weight, 8 spline coefficients, spline scaler
        "fourierkan": 2 * (2 * 784 * 16 * 5) + 16 + 784,
        "wavkan": 2 * (3 * 784 * 16) + 2 * (16 + 784),  # scale, translation, weight; batch-norm affine
        "kae3": 2 * 3 * 784 * 16 + 16 + 784,
    }
    for key, count in expected.items():
        assert count_parameters(build_model(key, 784, 16, MODEL_SPECS[key].grid[0])) == count, key
    mlp = build_model("mlp", 784, 16, {"lr": 1e-3, "weight_decay": 0.0, "hidden": 64})
    assert mlp.hidden_dims == (64,)
    assert mlp(torch.rand(3, 784)).shape == (3, 784)
    with pytest.raises(ValueError, match="key"):
        build_model("vae", 784, 16, {})


#: the "Improve" rows printed under Tables 2-5 of the paper (Yu et al., arXiv:2501.00420), typed from its text: the
#: gain of the best KAE over the AE per column (MNIST 16, 32, FashionMNIST 16, 32, CIFAR10 16, 32, CIFAR100 16, 32).
#: They are not stored in paper_tables.py, so they check its AE and KAE rows independently of their transcription.
PAPER_IMPROVE_ROWS = {
    "recon_mse": (0.032, 0.028, 0.027, 0.019, 0.018, 0.017, 0.021, 0.018),
    "recall": (0.242, 0.206, 0.206, 0.135, 0.157, 0.159, 0.164, 0.162),
    "knn_acc": (0.087, 0.048, 0.068, 0.045, 0.072, 0.071, 0.055, 0.053),
    "gauss": (0.031, 0.028, 0.027, 0.019, 0.017, 0.016, 0.021, 0.018),
    "sp": (0.024, 0.021, 0.021, 0.016, 0.014, 0.013, 0.017, 0.015),
}
COLUMNS = [(ds, d) for ds in ("mnist", "fashion-mnist", "cifar10", "cifar100") for d in (16, 32)]


@pytest.mark.parametrize("metric", sorted(PAPER_IMPROVE_ROWS))
def test_paper_values_agree_with_the_papers_improve_rows(metric):
    higher_is_better = metric in ("recall", "knn_acc")
    for (ds, d), improve in zip(COLUMNS, PAPER_IMPROVE_ROWS[metric]):
        ae = paper_value(metric, "ae", ds, d)
        kae = [paper_value(metric, k, ds, d) for k in ("kae1", "kae2", "kae3")]
        gain = max(kae) - ae if higher_is_better else ae - min(kae)
        assert gain == pytest.approx(improve, abs=1e-9), (metric, ds, d)


@pytest.mark.parametrize("metric,model,dataset,d,printed", [
    # single entries typed from the paper's tables, for the baseline rows the Improve rows do not cover
    ("recon_mse", "wavkan", "mnist", 16, 0.175),  # Table 2
    ("recon_mse", "kan", "fashion-mnist", 32, 0.024),
    ("recall", "fourierkan", "mnist", 32, 0.638),  # Table 3
    ("knn_acc", "kan", "fashion-mnist", 16, 0.752),  # Table 4
    ("gauss", "fourierkan", "cifar10", 32, 0.041),  # Table 5-I
    ("sp", "kan", "cifar100", 16, 0.050),  # Table 5-II
])
def test_paper_values_typed_from_the_paper(metric, model, dataset, d, printed):
    assert paper_value(metric, model, dataset, d) == printed


def test_paper_value_lookup(monkeypatch):
    """Column arithmetic on a table whose entry is its own column index, and every 'no value' case."""
    from benchmarks.kae_protocol import paper_tables

    monkeypatch.setattr(paper_tables, "PAPER_TABLES", {"m": {"x": tuple(float(c) for c in range(8))}})
    for column, (ds, d) in enumerate(COLUMNS):
        assert paper_tables.paper_value("m", "x", ds, d) == column
    assert paper_tables.paper_value("m", "mlp", "mnist", 16) is None  # a model the paper does not have
    assert paper_tables.paper_value("m", "x", "synthetic", 16) is None  # a dataset the paper does not have
    assert paper_tables.paper_value("m", "x", "mnist", 8) is None  # a latent size the paper does not have
    assert paper_tables.paper_value("other", "x", "mnist", 16) is None


# ---------------------------------------------------------------------------------------------------- protocol
@pytest.fixture(scope="module")
def tiny():
    return make_blob_images(n_train=300, n_test=120, seed=1)


def test_training_reduces_loss(tiny):
    data = flatten_splits(tiny)
    torch.manual_seed(0)
    model = build_model("kae2", 784, 8, {})
    history = train_autoencoder(model, data.x_train, 1e-3, 0.0, epochs=4, batch_size=64)
    assert len(history) == 4 and history[-1] < history[0]
    assert not model.training  # left in eval mode


def test_evaluate_returns_every_metric(tiny):
    data = flatten_splits(tiny)
    torch.manual_seed(0)
    model = build_model("ae", 784, 8, {})
    cfg = ProtocolConfig(recall_samples=50, eval_batch_size=64)
    metrics = evaluate_autoencoder(model, data, cfg, seed=2024)
    recalls = {"recall_per_class", "recall_random", "recall_no_self", "recall_cosine", "recall_pre_relu"}
    assert set(metrics) == {"recon_mse", "recall", "knn_acc", "gauss_clean", "gauss_noisy", "sp_clean",
                            "sp_noisy"} | recalls
    assert 0.0 <= metrics["recall"] <= 1.0 and 0.0 <= metrics["knn_acc"] <= 1.0
    assert metrics["recall"] == metrics["recall_per_class"]  # the authors' sampling is the default
    assert metrics == evaluate_autoencoder(model, data, cfg, seed=2024)  # seeded: repeatable
    other = evaluate_autoencoder(model, data, ProtocolConfig(recall_samples=50, eval_batch_size=64,
                                                             recall_sampling="random"), seed=2024)
    assert other["recall"] == other["recall_random"] == metrics["recall_random"]
    with pytest.raises(ValueError, match="recall_sampling"):
        ProtocolConfig(recall_sampling="all")


def test_selection_picks_lowest_validation_loss(tiny):
    data = flatten_splits(tiny)
    cfg = ProtocolConfig(epochs=1, batch_size=64, seeds=(2024,))
    chosen, records, seconds = select_configuration("kae1", data, 8, cfg, log=lambda m: None)
    assert len(records) == 4 and all(r["train_time"] > 0 for r in records)
    assert seconds >= sum(r["train_time"] for r in records)  # the selection's wall time includes its trainings
    assert [r["config"] for r in records] == list(MODEL_SPECS["kae1"].grid)  # every grid entry, in order
    assert chosen == min(records, key=lambda r: r["val_mse"])["config"]
    fixed = select_configuration("kae1", data, 8, ProtocolConfig(selection="fixed"), log=lambda m: None)
    assert fixed == ({"lr": 1e-4, "weight_decay": 1e-4}, [], 0.0)
    with pytest.raises(ValueError, match="selection"):
        ProtocolConfig(selection="test")


def test_run_protocol_resumes_and_reports(tiny):
    cfg = ProtocolConfig(epochs=1, batch_size=64, seeds=(2024, 2025), recall_samples=40)
    updates = []
    results = run_protocol({"synthetic": tiny}, ["ae", "kae1"], [4], cfg, log=lambda m: None,
                           on_update=lambda r: updates.append(1))
    cell = results["cells"]["synthetic/4/ae"]
    assert set(cell["runs"]) == {"2024", "2025"} and cell["params"] > 0 and "selected" in cell
    n_updates = len(updates)
    again = run_protocol({"synthetic": tiny}, ["ae", "kae1"], [4], cfg, log=lambda m: None, results=results,
                         on_update=lambda r: updates.append(1))
    assert len(updates) == n_updates  # nothing left to run
    assert again is results
    meta = {"command": "test", "started": "now", "wall_time": 1.0, "threads": 1, "torch": torch.__version__,
            "cpu_count": 2, "protocol": cfg.as_dict(), "fused": False, "quick": True}
    text = render_report(results, meta)
    for needle in ("Table 2", "Table 3", "Table 4", "Table 5-I", "Table 5-II", "Table 5b", "KAE (p=1)", "±",
                   "CIFAR-10", "Hyper-parameter selection", "Speed of the protocol", "Table 3b",
                   "query excluded"):
        assert needle in text, needle
    with pytest.raises(ValueError, match="models"):
        run_protocol({"synthetic": tiny}, ["bogus"], [4], cfg)


def test_worker_entry_points_match_serial(tiny):
    """The code a worker process runs, called in this process (spawning workers costs tens of seconds)."""
    from benchmarks.kae_protocol import protocol
    from monai_kan.layers.fused import fused_kernels_enabled, set_fused_kernels

    cfg = ProtocolConfig(epochs=1, batch_size=64, seeds=(2024,), recall_samples=40)
    serial = run_protocol({"synthetic": tiny}, ["kae1"], [2], cfg, log=lambda m: None)
    name = "synthetic/2/kae1"
    threads, fused = torch.get_num_threads(), fused_kernels_enabled()
    try:
        protocol._worker_init({"synthetic": flatten_splits(tiny)}, cfg, 1, False)
        selection = [protocol._worker_run(((name, "select", i), None)) for i in range(4)]
        chosen = serial["cells"][name]["selected"]
        task, final = protocol._worker_run(((name, "seed", 2024), chosen))
    finally:
        torch.set_num_threads(threads)
        set_fused_kernels(fused)
    assert [t for t, _ in selection] == [(name, "select", i) for i in range(4)] and task == (name, "seed", 2024)
    serial_val = [r["val_mse"] for r in serial["cells"][name]["selection"]]
    assert [r["val_mse"] for _, r in selection] == pytest.approx(serial_val)
    assert final["recon_mse"] == pytest.approx(serial["cells"][name]["runs"]["2024"]["recon_mse"])
    with pytest.raises(ValueError, match="workers"):
        run_protocol({"synthetic": tiny}, ["ae"], [2], cfg, workers=0)


def test_report_puts_paper_values_beside_ours():
    runs = {"2024": {"recon_mse": 0.03, "recall": 0.5, "knn_acc": 0.9, "gauss_clean": 0.04, "gauss_noisy": 0.05,
                     "sp_clean": 0.06, "sp_noisy": 0.07, "train_time": 1.0, "eval_time": 0.5}}
    results = {"cells": {f"mnist/16/{k}": {"runs": runs, "params": 10, "selected": {"lr": 1e-4, "weight_decay": 1e-5},
                                           "selection": [], "selection_time": 2.0} for k in ("ae", "kae3")},
               "dataset_sources": {"mnist": {"source": "x", "n_train": 8, "n_test": 2, "n_features": 784}}}
    meta = {"command": "c", "started": "s", "wall_time": 60.0, "threads": 1, "torch": "t", "cpu_count": 2,
            "protocol": ProtocolConfig().as_dict(), "fused": True, "quick": False}
    text = render_report(results, meta)
    assert "| AE | 0.0300 ± 0.0000 | 0.056 |" in text
    assert "| KAE (p=3) | 0.0300 ± 0.0000 | 0.024 |" in text


def test_both_kae_parametrisations_are_specified():
    """kae1e..kae3e: the authors' edge constants, beside kae1..kae3, compared with the same paper rows."""
    from benchmarks.kae_protocol import EDGE_PAPER_MODELS

    assert EDGE_PAPER_MODELS == ["ae", "kan", "fourierkan", "wavkan", "kae1e", "kae2e", "kae3e"]
    for p in (1, 2, 3):
        out, edge = build_model(f"kae{p}", 784, 16, {}), build_model(f"kae{p}e", 784, 16, {})
        assert (out.constant, edge.constant, out.order, edge.order) == ("output", "edge", p, p)
        assert count_parameters(edge) - count_parameters(out) == 2 * 784 * 16  # one constant per edge
        assert MODEL_SPECS[f"kae{p}e"].label == f"KAE (p={p}, edge constants)"
        assert paper_value("recon_mse", f"kae{p}e", "fashion-mnist", 16) == paper_value("recon_mse", f"kae{p}",
                                                                                          "fashion-mnist", 16)
    assert paper_value("recon_mse", "kae3e", "fashion-mnist", 16) == 0.018
    assert build_model("ae", 784, 16, {}).constant is None  # other layer types get no constant option


def test_pending_tasks_order_selection_before_seeds():
    cfg = ProtocolConfig(seeds=(1, 2))
    cells = {"d/4/ae": {"runs": {}}}
    assert pending_tasks(cells, ["d/4/ae"], cfg) == [("d/4/ae", "select", i) for i in range(4)]
    cells["d/4/ae"]["selection_runs"] = {
        str(i): {"config": dict(MODEL_SPECS["ae"].grid[i]), "val_mse": v, "train_time": 1.0}
        for i, v in enumerate([0.3, 0.1, 0.2])}
    assert pending_tasks(cells, ["d/4/ae"], cfg) == [("d/4/ae", "select", 3)]  # a seed waits for the selection
    cells["d/4/ae"]["selection_runs"]["3"] = {"config": dict(MODEL_SPECS["ae"].grid[3]), "val_mse": 0.4,
                                               "train_time": 1.0}
    assert pending_tasks(cells, ["d/4/ae"], cfg) == [("d/4/ae", "seed", 1), ("d/4/ae", "seed", 2)]
    cell = cells["d/4/ae"]
    assert cell["selected"] == MODEL_SPECS["ae"].grid[1] and cell["selection_time"] == 4.0  # lowest val MSE
    cell["runs"]["1"] = {}
    assert pending_tasks(cells, ["d/4/ae"], cfg) == [("d/4/ae", "seed", 2)]
    fixed = {"d/4/ae": {"runs": {}}}
    assert pending_tasks(fixed, ["d/4/ae"], ProtocolConfig(seeds=(1,), selection="fixed")) == [("d/4/ae", "seed", 1)]
    assert fixed["d/4/ae"]["selected"] == {"lr": 1e-4, "weight_decay": 1e-4}


def test_interrupted_run_resumes_where_it_stopped(tiny):
    """Every finished training is stored at once; a resumed run trains only what is missing, also new seeds."""
    cfg = ProtocolConfig(epochs=1, batch_size=64, seeds=(2024,), recall_samples=40)
    saved = []

    def save_then_stop(results):
        saved.append(json.loads(json.dumps(results)))  # what the script writes to its JSON file
        if len(saved) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_protocol({"synthetic": tiny}, ["kae1"], [2], cfg, log=lambda m: None, on_update=save_then_stop)
    partial = saved[-1]
    assert len(partial["cells"]["synthetic/2/kae1"]["selection_runs"]) == 3  # three of four grid entries stored
    trained = []
    done = run_protocol({"synthetic": tiny}, ["kae1"], [2], cfg, log=trained.append, results=partial)
    assert sum("select" in m and "val MSE" in m for m in trained) == 1 and sum("seed 2024" in m for m in trained) == 1
    fresh = run_protocol({"synthetic": tiny}, ["kae1"], [2], cfg, log=lambda m: None)
    assert done["cells"]["synthetic/2/kae1"]["selected"] == fresh["cells"]["synthetic/2/kae1"]["selected"]
    assert done["cells"]["synthetic/2/kae1"]["runs"]["2024"]["recon_mse"] == pytest.approx(
        fresh["cells"]["synthetic/2/kae1"]["runs"]["2024"]["recon_mse"])
    more = []  # a second seed reuses the selection and the first seed
    run_protocol({"synthetic": tiny}, ["kae1"], [2], ProtocolConfig(epochs=1, batch_size=64, seeds=(2024, 2025),
                                                                      recall_samples=40),
                 log=more.append, results=done)
    assert [m for m in more if "val MSE" in m or "seed" in m] == [m for m in more if "seed 2025" in m]
    assert set(done["cells"]["synthetic/2/kae1"]["runs"]) == {"2024", "2025"}


def test_cache_key_ignores_seed_list_but_not_the_selection_seed():
    a, b = ProtocolConfig(seeds=(2024,)), ProtocolConfig(seeds=(2024, 2025, 2026))
    assert a.cache_key() == b.cache_key()
    assert a.cache_key() != ProtocolConfig(seeds=(7,)).cache_key()
    assert a.cache_key() != ProtocolConfig(seeds=(2024,), epochs=3).cache_key()


def test_fused_adam_matches_default_adam():
    from benchmarks.kae_protocol import make_optimizer

    torch.manual_seed(0)
    a = build_model("kae2e", 20, 3, {})
    b = build_model("kae2e", 20, 3, {})
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = make_optimizer(a, 1e-2, 1e-4), torch.optim.Adam(b.parameters(), lr=1e-2, weight_decay=1e-4)
    x = torch.rand(16, 20)
    for _ in range(5):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), x).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- script
def _load_script():
    return load_script("kae_benchmark")


@pytest.mark.slow
def test_benchmark_quick_end_to_end(tmp_path, capsys):
    script = _load_script()
    out, raw = tmp_path / "results.md", tmp_path / "results.json"
    rc = script.main(["--quick", "--datasets", "synthetic", "--latent-dims", "4", "--max-train", "300",
                      "--max-test", "100", "--threads", "1", "--workers", "1", "--no-fused", "--output", str(out),
                      "--json", str(raw)])
    assert rc == 0
    text = out.read_text()
    for spec in MODEL_SPECS.values():
        assert f"| {spec.label} |" in text, spec.label
    assert "Quick mode" in text and "wall time of the whole run" in text
    saved = json.loads(raw.read_text())
    assert len(saved["results"]["cells"]) == len(MODEL_SPECS) and "meta" in saved
    assert "[synthetic/4/wavkan]" in capsys.readouterr().out  # progress output
    out.unlink()
    assert script.main(["--report-only", "--json", str(raw), "--output", str(out)]) == 0
    assert out.read_text() == text
    # resuming a finished run trains nothing and lists both invocations
    args = ["--quick", "--datasets", "synthetic", "--latent-dims", "4", "--max-train", "300", "--max-test", "100",
            "--threads", "1", "--no-fused", "--output", str(out), "--json", str(raw), "--resume"]  # default workers
    assert script.main(args) == 0
    assert "select" not in capsys.readouterr().out
    assert "its 2 invocations" in out.read_text()
    invocations = json.loads(raw.read_text())["results"]["invocations"]
    assert invocations[1]["scope"]["trainings_run"] == 0 and invocations[1]["scope"]["reused"] > 0
    assert script.main(args[:-1] + ["--epochs", "1"] + ["--resume"]) == 2  # other settings: refused


def test_benchmark_reports_missing_data(tmp_path, monkeypatch, capsys):
    script = _load_script()
    import benchmarks.kae_protocol.mnist as mnist

    monkeypatch.setattr(mnist, "FASHION_MNIST_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.delenv("MONAI_KAN_FASHION_MNIST_DIR", raising=False)
    rc = script.main(["--datasets", "fashion-mnist", "--output", str(tmp_path / "r.md")])
    assert rc == 1
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()
