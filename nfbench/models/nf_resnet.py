"""timm's NF-ResNets (Brock, De, Smith 2021a) with this package's structure: stem, blocks, head.

timm's ``NormFreeNet`` is re-parented, not rewritten: its stem, its blocks (each
wrapped to expose ``branch``, ``shortcut``, ``skip`` and ``input_scale``) and its
final conv, activation and classifier run in timm's order.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from nfbench.models.resnet import Block, IdentityShortcut, ResNet

_IDENTITY = IdentityShortcut()


class TimmNFBlock(Block):
    """One of timm's ``NormFreeBlock``: x + alpha * f(beta * act(x)), its shortcut on beta * act(x)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.stride = cast(nn.Conv2d, block.conv2).stride[0]

    @property
    def branch(self) -> list[nn.Conv2d]:  # type: ignore[override]
        b = self.block
        return [cast(nn.Conv2d, c) for c in (b.conv1, b.conv2, b.conv2b, b.conv3) if c is not None]

    @property
    def shortcut(self) -> nn.Module:  # type: ignore[override]
        return cast(nn.Module, self.block.downsample) if self.block.downsample is not None else _IDENTITY

    @property
    def input_scale(self) -> float:
        """timm's beta: the multiplier 1/sqrt(expected Var(x)) on the activated input."""
        return cast(float, self.block.beta)  # a float attribute of timm's block, not a tensor

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.block.downsample is None:
            return x
        return self.block.downsample(self.block.act1(x) * self.block.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class TimmNFHead(nn.Module):
    """timm's final conv (identity for NF-ResNets), final activation and classifier head (pool + fc)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.final_conv, self.final_act, self.classifier = net.final_conv, net.final_act, net.head

    @property
    def fc(self) -> nn.Linear:
        return cast(nn.Linear, self.classifier.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.final_act(self.final_conv(x)))


def timm_nf_resnet(name: str, num_classes: int, in_chans: int, **kwargs) -> ResNet:
    """timm.create_model(name) (no pretrained weights) as a :class:`ResNet`; kwargs overlay timm's NfCfg."""
    import timm

    net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    blocks = [TimmNFBlock(b) for stage in net.stages for b in stage]
    return ResNet(cast(nn.Module, net.stem), blocks, TimmNFHead(net))
