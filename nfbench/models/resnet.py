"""Pre-activation ResNets (He et al. 2016b) whose residual sum is chosen by a scheme.

Every network exposes its ``stem``, its ordered ``blocks`` and its ``head``;
every block exposes its ``branch`` convolutions in order, its ``shortcut``,
and its scalars.  Schemes and the signal-propagation tool work on that
structure, never on parameter names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

if TYPE_CHECKING:
    from nfbench.schemes import Scheme


class Scalar(nn.Module):
    """One learnable scalar.  Optimiser groups find these by type (no weight decay, lr multiplier)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(value)))

    def extra_repr(self) -> str:
        return f"{self.weight.item():.4g}"


class ScalarGain(Scalar):
    """y = g * x (LearnScalar's alpha, SkipInit's gate, Fixup's multiplier)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class ScalarBias(Scalar):
    """y = x + b (Fixup's scalar biases)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


class ConvShortcut(nn.Module):
    """h(x) = W_s a: a 1x1 convolution (with the block's stride) of the activated input."""

    takes_activated = True

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.conv(a)


class IdentityShortcut(nn.Identity):
    """h(x) = x, of the raw block input."""

    takes_activated = False


class ScaledIdentityShortcut(nn.Module):
    """h(x) = alpha * x with a learnable alpha (Civitelli et al., LearnScalar)."""

    takes_activated = False

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = ScalarGain(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha(x)


class ResidualBlock(nn.Module):
    """x_l = c * (h(x_{l-1}) + gate(f(x_{l-1}))), f = (norm -> act -> conv) repeated.

    Civitelli et al. eq. 5.  ``branch`` holds the convolutions of f in order,
    ``norms`` the normalisation before each of them (Identity when the scheme
    has none); a conv shortcut sees the activated input a = act(norm(x)).
    """

    def __init__(self, branch: Sequence[nn.Conv2d], norms: Sequence[nn.Module], shortcut: nn.Module,
                 act: nn.Module, gate: nn.Module, scale: float, stride: int) -> None:
        super().__init__()
        assert len(branch) == len(norms)
        self.branch = nn.ModuleList(branch)
        self.norms = nn.ModuleList(norms)
        self.shortcut = shortcut
        self.act = act
        self.gate = gate
        self.scale = scale
        self.stride = stride

    @property
    def in_chans(self) -> int:
        return self.branch[0].in_channels

    @property
    def out_chans(self) -> int:
        return self.branch[-1].out_channels

    def scalars(self) -> list[Scalar]:
        return [m for m in self.modules() if isinstance(m, Scalar)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.norms[0](x))
        skip = self.shortcut(a if self.shortcut.takes_activated else x)
        out = self.branch[0](a)
        for norm, conv in zip(self.norms[1:], self.branch[1:]):
            out = conv(self.act(norm(out)))
        out = skip + self.gate(out)
        return out * self.scale if self.scale != 1.0 else out

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, stride={self.stride}"


class Head(nn.Module):
    """norm -> act -> global average pool -> linear (the pre-activation trunk's end)."""

    def __init__(self, norm: nn.Module, act: nn.Module, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.norm, self.act = norm, act
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.act(self.norm(x)), 1), 1))


class ResNet(nn.Module):
    def __init__(self, stem: nn.Module, blocks: Sequence[ResidualBlock], head: Head) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@dataclass(frozen=True)
class ResNetSpec:
    """Blocks per stage, stage-1 width and block type; widths double per stage."""

    depths: tuple[int, ...]
    width: int
    bottleneck: bool

    def widths(self, width: int | None = None) -> list[int]:
        w = width or self.width
        return [w * 2**i for i in range(len(self.depths))]


def _branch(in_chans: int, width: int, stride: int, bottleneck: bool) -> tuple[list[nn.Conv2d], int]:
    if bottleneck:
        out = width * 4
        convs = [nn.Conv2d(in_chans, width, 1, bias=False),
                 nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False),
                 nn.Conv2d(width, out, 1, bias=False)]
    else:
        out = width
        convs = [nn.Conv2d(in_chans, width, 3, stride=stride, padding=1, bias=False),
                 nn.Conv2d(width, width, 3, padding=1, bias=False)]
    return convs, out


def build_resnet(spec: ResNetSpec, scheme: "Scheme", num_classes: int, in_chans: int = 3,
                 stem: str = "cifar", width: int | None = None) -> ResNet:
    """Assemble a pre-activation ResNet; ``scheme`` supplies norms, shortcuts, gates and c."""
    widths = spec.widths(width)
    if stem == "cifar":
        stem_mod: nn.Module = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False))
    elif stem == "imagenet":
        stem_mod = nn.Sequential(nn.Conv2d(in_chans, widths[0], 7, stride=2, padding=3, bias=False),
                                 nn.MaxPool2d(3, stride=2, padding=1))
    else:
        raise ValueError(f"unknown stem '{stem}'; choose cifar or imagenet")
    blocks: list[ResidualBlock] = []
    chans = widths[0]
    for stage, (depth, w) in enumerate(zip(spec.depths, widths)):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            convs, out = _branch(chans, w, stride, spec.bottleneck)
            norms = [scheme.norm(c.in_channels) for c in convs]
            blocks.append(ResidualBlock(convs, norms, scheme.shortcut(chans, out, stride), scheme.act(),
                                        scheme.gate(), scheme.residual_scale, stride))
            chans = out
    head = Head(scheme.norm(chans), scheme.act(), chans, num_classes)
    return ResNet(stem_mod, blocks, head)
