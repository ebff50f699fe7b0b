"""What a training step is made of: inputs onto the device, the autocast forward.
"""

from __future__ import annotations

import torch
from torch import nn


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
