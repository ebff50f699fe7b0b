"""The training loss and top-1 of an epoch, kept on the device at four kernels per step.

A small-batch step on a fast GPU is bound by how quickly the host launches kernels, so every
kernel the runner adds per step costs throughput. Each step writes its mean loss and its number
of top-1 hits into preallocated device buffers; :meth:`EpochMetrics.fold` adds the steps since
its last call into the running sums and finds the first non-finite loss among them, reading the
device once. The training loop folds at log steps, where it reads the device anyway.
"""

from __future__ import annotations

from typing import Optional

import torch


def top1_hits(logits: torch.Tensor, target: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """How many of the batch's top-1 logits hit the integer labels, as a device tensor (into ``out``)."""
    return torch.sum(logits.detach().argmax(1).eq(target), dim=0, out=out)


class EpochMetrics:
    """Running sums (loss x images, top-1 hits, images) of one epoch, as a float64 device tensor ``sums``.

    ``start`` is the first step this object will see (a resumed epoch starts part-way, with the
    sums its checkpoint recorded).
    """

    def __init__(
        self, steps: int, device: torch.device, loss_sum: float = 0.0, correct: int = 0, seen: int = 0, start: int = 0
    ) -> None:
        self.losses = torch.zeros(steps, device=device)
        self.hits = torch.zeros(steps, device=device, dtype=torch.int64)
        self.sizes = [0] * steps
        self.sums = torch.tensor([loss_sum, correct, seen], device=device, dtype=torch.float64)
        self.folded = start
        self.first_bad: Optional[tuple[int, float]] = None

    def record(self, i: int, loss: torch.Tensor, hits: torch.Tensor, size: int) -> None:
        """Record step ``i``: its mean loss and its top-1 hits, as the step counted them on the device
        (:func:`nfbench.engine.step.train_step`), and its batch size."""
        self.losses[i] = loss
        self.hits[i] = hits
        self.sizes[i] = size

    def fold(self, upto: int) -> Optional[tuple[int, float]]:
        """Add steps [last fold, ``upto``) into ``sums``; return (step in the epoch, loss) of the
        epoch's first non-finite loss, or None."""
        if upto > self.folded:
            window = slice(self.folded, upto)
            losses = self.losses[window]
            sizes = torch.tensor(self.sizes[window], dtype=torch.float64).to(self.sums.device)
            self.sums += torch.stack([(losses.double() * sizes).sum(), self.hits[window].sum().double(), sizes.sum()])
            bad = ~torch.isfinite(losses)
            first = bad.int().argmax()  # the first True, or 0 when there is none
            any_bad, where, value = torch.stack([bad.any().double(), first.double(), losses[first].double()]).tolist()
            if any_bad and self.first_bad is None:
                self.first_bad = (self.folded + int(where), value)
            self.folded = upto
        return self.first_bad
