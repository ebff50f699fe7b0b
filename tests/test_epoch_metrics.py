"""EpochMetrics (nfbench/engine/metrics.py): the sums and the first non-finite loss, by hand."""

from __future__ import annotations

import math

import torch

from nfbench.engine.metrics import EpochMetrics, top1_hits


def test_folds_give_the_running_sums_and_the_first_non_finite_loss():
    m = EpochMetrics(5, torch.device("cpu"), loss_sum=10.0, correct=3, seen=8, start=1)
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # top-1: 1, 0, 1
    steps = [(2.0, [1, 1, 1]), (4.0, [1, 0, 0]), (math.inf, [0, 0, 0]), (math.nan, [1, 0, 1])]
    for i, (loss, labels) in enumerate(steps, start=1):
        m.record(i, torch.tensor(loss), top1_hits(logits, torch.tensor(labels)), len(labels))
    assert m.fold(3) is None  # steps 1-2 only
    assert m.sums.tolist() == [10.0 + 3 * 2.0 + 3 * 4.0, 3 + 2 + 2, 8 + 6]
    assert m.fold(5) == (3, math.inf)  # the first of the two bad steps, with its loss
    assert m.fold(5) == (3, math.inf)  # and it stays the first
    hits, seen = m.sums.tolist()[1:]
    assert (hits, seen) == (3 + 2 + 2 + 1 + 3, 8 + 12)
