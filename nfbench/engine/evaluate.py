"""Evaluation on the test set or the validation split, summed exactly over ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from nfbench.engine import distributed
from nfbench.engine.preemption import PackStop, StopSignal
from nfbench.engine.step import forward, to_device


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k logits, for each k (device tensors)."""
    kmax = min(max(ks), logits.shape[1])
    hit = logits.topk(kmax, dim=1).indices.eq(target[:, None])
    return [hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


@dataclass(frozen=True)
class StopPoll:
    """Where a loop over batches looks for a stop signal: at every batch in one process (``every`` 1);
    with several, at every ``every``-th of the first ``until`` batches (those every rank has), all ranks
    agreeing in one small all-reduce, so that they leave at the same batch."""

    signal: StopSignal | PackStop
    every: int
    until: int
    device: torch.device

    def asks(self, i: int) -> bool:
        """Whether the signal asks to leave before batch ``i`` (the same answer on every rank)."""
        return (
            i < self.until
            and i % self.every == 0
            and distributed.any_rank(self.signal.received is not None, self.device)
        )


@torch.no_grad()
def evaluate(
    net: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: dict,
    channels_last: bool,
    stop: Optional[StopPoll] = None,
    split: str = "test",
) -> Optional[dict]:
    """Loss (plain cross-entropy), top-1 and top-5 in percent on ``split`` (test or val), summed exactly
    over all ranks; None when ``stop`` asks to leave (a stop signal: an evaluation can outlast SLURM's grace)."""
    net.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top-1 hits, top-5 hits, images
    for i, (x, y) in enumerate(loader):
        if stop is not None and stop.asks(i):
            return None
        x, y = to_device(x, y, device, channels_last)
        logits = forward(net, x, amp)
        c1, c5 = topk_correct(logits, y, (1, 5))
        sums[:3] += torch.stack(
            [nn.functional.cross_entropy(logits.float(), y, reduction="sum").double(), c1.double(), c5.double()]
        )
        sums[3] += len(y)  # a Python number: no blocking host-to-device copy per batch
    distributed.all_reduce_sum(sums)
    loss, c1, c5, n = sums.tolist()
    return {f"{split}_loss": loss / n, f"{split}_top1": 100.0 * c1 / n, f"{split}_top5": 100.0 * c5 / n}
