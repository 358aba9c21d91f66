"""The KAE protocol's faster evaluation pieces give the answers of their plain definitions."""

import torch

from benchmarks.kae_protocol.metrics import nearest_neighbor_accuracy


def brute_force_1nn(ref, ref_labels, queries, query_labels):
    d = ((queries[:, None, :].double() - ref[None, :, :].double()) ** 2).sum(-1)
    return float((ref_labels[d.argmin(1)] == query_labels).double().mean())


def test_blocked_nearest_neighbour_equals_brute_force_across_blocks_and_ties():
    gen = torch.Generator().manual_seed(0)
    ref = torch.randint(0, 4, (103, 3), generator=gen).float()  # integer grid: many exact ties
    ref_labels = torch.arange(103) % 5
    queries = torch.randint(0, 4, (37, 3), generator=gen).float()
    query_labels = torch.randint(0, 5, (37,), generator=gen)
    expected = brute_force_1nn(ref, ref_labels, queries, query_labels)
    for chunk, ref_chunk in ((256, 4096), (5, 7), (1, 1), (37, 103), (8, 50)):
        assert nearest_neighbor_accuracy(ref, ref_labels, queries, query_labels, chunk, ref_chunk) == expected
    continuous = torch.randn(500, 16, generator=gen), torch.randn(60, 16, generator=gen)
    labels = torch.randint(0, 10, (500,), generator=gen), torch.randint(0, 10, (60,), generator=gen)
    assert nearest_neighbor_accuracy(continuous[0], labels[0], continuous[1], labels[1], 16, 64) == brute_force_1nn(
        continuous[0], labels[0], continuous[1], labels[1])


def test_timing_runs_are_listed_in_the_speed_section():
    from benchmarks.kae_protocol.models import MODEL_SPECS, PAPER_MODELS
    from benchmarks.kae_protocol.report import _timing_runs_section

    scope = {"datasets": ["fashion-mnist"], "latent_dims": [16], "models": list(PAPER_MODELS), "seeds": [2024],
             "reused": 0, "seed_run": 7, "selection_run": sum(len(MODEL_SPECS[m].grid) for m in PAPER_MODELS)}
    run = {"command": "python scripts/kae_benchmark.py ...", "wall_time": 540.0, "cpu_time": 1020.0, "workers": 2,
           "threads": 1, "load_average": [2.0, 2.5], "scope": scope, "finished": True}
    cells = {"fashion-mnist/16/ae": {"selection": [{"train_cpu": 5.0, "train_time": 6.0}] * 4,
                                     "runs": {"2024": {"train_cpu": 6.0, "train_time": 7.0, "eval_cpu": 3.0,
                                                       "eval_time": 3.5}}}}
    meta = {"timing_runs": [{"source": "t.json", "results": {"cells": cells},
                             "meta": {"invocations": [run], "cpu_count": 2, "git_commit": "abc1234"}}]}
    text = "\n".join(_timing_runs_section(meta))
    assert "**9.0 min wall**" in text and "load average 2.0 -> 2.5" in text and "17.0 core-min" in text
    assert "from scratch" in text and "commit abc1234" in text
    assert "| fashion-mnist/16/ae | 5, 5, 5, 5 | 6 | 3 |" in text and "Sum over the trainings and evaluations: 29" in text
    assert _timing_runs_section({}) == []
