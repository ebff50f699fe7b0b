"""He et al. 2016a's own CIFAR ResNets (section 4.2, the networks of Table 6): post-activation, BatchNorm inside.

Not nfbench's pre-activation ``resnet20``..``resnet110`` (He et al. 2016b): each basic block here is
conv3x3 -> BN -> ReLU -> conv3x3 -> BN, then the sum with the shortcut, then ReLU; where a block
changes shape its shortcut is option A (subsample by the stride, pad the new channels with zeros, no
parameters); the stem is one 3x3 conv -> BN -> ReLU; the head is global average pooling and a linear
layer with bias.  The BatchNorm is architecture, so the network is built whole, without a scheme's
parts; it exposes ``stem``, ``blocks`` (each with its ``branch`` convs, ``shortcut``, ``skip``,
``stride``) and ``head`` as every nfbench ResNet does, so ``init=bn``'s initialise, SPP and
``nfbench summary`` work on it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from nfbench.models.resnet import Block, Head, IdentityShortcut, ResNet, ResNetSpec, ZeroPadShortcut, plain_conv


class PostActivationBasicBlock(Block):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + h(x)), h the identity or option A (He et al. 2016a, Fig. 2)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.branch = nn.ModuleList(
            [plain_conv(in_chans, out_chans, 3, stride, 1), plain_conv(out_chans, out_chans, 3, 1, 1)]
        )
        self.norms = nn.ModuleList([nn.BatchNorm2d(out_chans), nn.BatchNorm2d(out_chans)])
        changes_shape = stride != 1 or in_chans != out_chans
        self.shortcut = ZeroPadShortcut(in_chans, out_chans, stride) if changes_shape else IdentityShortcut()
        self.act = nn.ReLU()
        self.stride = stride

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norms[0](self.branch[0](x)))
        out = self.norms[1](self.branch[1](out))
        return self.act(out + self.skip(x))


def he_cifar_spec(depth: int) -> ResNetSpec:
    """ResNet-depth of He et al. 2016a section 4.2: three stages of n = (depth - 2) / 6 basic blocks, 16-32-64."""
    return ResNetSpec(((depth - 2) // 6,) * 3, 16, bottleneck=False)


def he_cifar_resnet(spec: ResNetSpec, num_classes: int, in_chans: int = 3, width: int | None = None) -> ResNet:
    """The network, uninitialised; ``width`` is the stem's and stage 1's channels (16 in the paper)."""
    stem_width = width or spec.width
    stem = nn.Sequential(plain_conv(in_chans, stem_width, 3, 1, 1), nn.BatchNorm2d(stem_width), nn.ReLU())
    blocks: list[Block] = []
    chans = stem_width
    for stage, (depth, w) in enumerate(zip(spec.depths, spec.widths(width))):
        for i in range(depth):
            blocks.append(PostActivationBasicBlock(chans, w, 2 if stage > 0 and i == 0 else 1))
            chans = w
    # The blocks end in a ReLU already: the head is pool -> linear (with bias), no norm or activation of its own.
    return ResNet(stem, blocks, Head(nn.Identity(), nn.Identity(), chans, num_classes))
