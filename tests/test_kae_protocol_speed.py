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
