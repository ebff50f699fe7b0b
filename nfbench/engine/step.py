"""One training step, the one definition the eager and the captured path share.

:func:`train_step` is forward (under the run's autocast), loss, backward, gradient clipping (by norm or
AGC), the optimiser's step and the step's top-1 hits: what nfbench trains with.  :class:`EagerStep` runs it
on every batch; :class:`nfbench.engine.graph.GraphedStep` captures the same function once in a CUDA graph
and replays it.  Both are called ``step(x, y) -> (loss, hits)`` with the batch as the loader gives it,
and leave every figure on the device (reading one would wait for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from nfbench.config import OptimConfig
from nfbench.engine.metrics import top1_hits
from nfbench.engine.optim import clip_gradients

if TYPE_CHECKING:
    from timm.data import Mixup

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def forward(net: nn.Module, x: torch.Tensor, amp: dict) -> torch.Tensor:
    """The forward pass, under the run's autocast (``trainer.precision``): the one place it is entered.
    Losses are taken outside, on float32 logits."""
    with torch.autocast(**amp):
        return net(x)


@dataclass(frozen=True)
class StepObjects:
    """What one training step works on: the network it calls (DDP- or compile-wrapped, or the bare model
    a graph captures), its optimiser, loss, autocast arguments, grad scaler (disabled but in fp16) and the
    clipping config (``optim.clip_grad_norm`` or ``optim.agc``)."""

    net: nn.Module
    opt: torch.optim.Optimizer
    criterion: nn.Module
    amp: dict
    scaler: torch.amp.GradScaler
    optim: OptimConfig

    @property
    def clip(self) -> bool:
        return self.optim.clip_grad_norm > 0 or self.optim.agc > 0


def train_step(
    o: StepObjects, x: torch.Tensor, target: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch already on the device, its gradients zeroed: forward, loss against
    ``target`` (soft with mixup or CutMix), backward, clipping, step; returns the loss and the number of
    top-1 hits on the integer ``labels``.  With the scaler disabled its calls are no-ops around
    ``loss.backward()`` and ``opt.step()``, so a CUDA graph can capture this function as it is."""
    logits = forward(o.net, x, o.amp)
    loss = o.criterion(logits.float(), target)
    o.scaler.scale(loss).backward()
    if o.clip:
        o.scaler.unscale_(o.opt)
        clip_gradients(o.net, o.optim)
    o.scaler.step(o.opt)
    o.scaler.update()
    return loss.detach(), top1_hits(logits, labels)


class EagerStep:
    """:func:`train_step` on every batch: the batch onto the device, mixup or CutMix drawn there (timm's
    ``Mixup``, which draws on the host), the gradients zeroed."""

    def __init__(
        self, objects: StepObjects, device: torch.device, channels_last: bool, mixup: Optional[Mixup] = None
    ) -> None:
        self.objects, self.device, self.channels_last, self.mixup = objects, device, channels_last, mixup

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = to_device(x, y, self.device, self.channels_last)
        x, target = self.mixup(x, y) if self.mixup is not None else (x, y)
        self.objects.opt.zero_grad(set_to_none=True)
        return train_step(self.objects, x, target, y)
