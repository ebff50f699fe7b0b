"""Pre-activation ResNets (He et al. 2016b) whose residual sum is chosen by a scheme.

Every network exposes its ``stem``, its ordered ``blocks`` and its ``head``;
every block exposes its ``branch`` convolutions in order, its ``shortcut``,
its scalars and ``skip(x)`` (the shortcut path's value).  Schemes and the
signal-propagation tool work on that structure, never on parameter names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence, cast

import torch
from torch import nn
from torch.nn import functional as F

# conv(in_chans, out_chans, kernel_size, stride, padding) -> a conv layer; schemes swap in
# weight-standardised (NF-ResNets) or weight-normalised (Arpit et al.) convolutions.
ConvFactory = Callable[[int, int, int, int, int], nn.Conv2d]


def plain_conv(in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """A bias-free convolution, as in every pre-activation ResNet."""
    return nn.Conv2d(in_chans, out_chans, kernel_size, stride=stride, padding=padding, bias=False)


class Scalar(nn.Module):
    """One learnable scalar.  Optimiser groups find these by type (no weight decay, lr multiplier)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(value)))

    def extra_repr(self) -> str:
        return f"{self.weight.item():.4g}" if not self.weight.is_meta else "meta"


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

    def __init__(self, in_chans: int, out_chans: int, stride: int, conv: ConvFactory = plain_conv) -> None:
        super().__init__()
        self.conv = conv(in_chans, out_chans, 1, stride, 0)

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


class ScaledSkipGain(nn.Module):
    """alpha * g * f: the NF-ResNets' fixed alpha and learnable skip gain g on the branch (Brock et al. 2021a)."""

    def __init__(self, alpha: float, gain: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.gain = ScalarGain(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain(x) * self.alpha

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.4g}"


class ScaledReLU(nn.Module):
    """gamma * relu(x), the NF-ResNets' activation: gamma restores unit variance for a unit Gaussian input
    (Brock et al. 2021a).  Out of place: timm's GammaAct scales ReLU's output in place, which autograd rejects."""

    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) * self.gamma

    def extra_repr(self) -> str:
        return f"gamma={self.gamma:.6g}"


class ZeroPadShortcut(nn.Module):
    """He et al. 2016a option A: subsample by the stride, pad the new channels with zeros (no parameters)."""

    takes_activated = False

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_chans - in_chans, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


class Block(nn.Module):
    """What every residual block exposes: ``branch`` (its convs in order), ``shortcut``, ``stride``,
    ``skip(x)`` (the shortcut path's value for input x) and its scalars."""

    branch: nn.ModuleList
    shortcut: nn.Module
    stride: int

    @property
    def in_chans(self) -> int:
        return cast(nn.Conv2d, self.branch[0]).in_channels

    @property
    def out_chans(self) -> int:
        return cast(nn.Conv2d, self.branch[-1]).out_channels

    @property
    def transition(self) -> bool:
        """Whether the block changes resolution or width (the first block of a stage)."""
        return self.stride != 1 or self.in_chans != self.out_chans

    def scalars(self) -> list[Scalar]:
        return [m for m in self.modules() if isinstance(m, Scalar)]

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ResidualBlock(Block):
    """x_l = c * (h(x) + gate(f(s * x))), f = (norm -> act -> bias -> conv) repeated.

    Civitelli et al. eq. 5.  ``branch`` holds the convolutions of f in order,
    ``norms`` what comes before each activation (BatchNorm, Fixup's scalar
    bias, or Identity) and ``conv_biases`` what comes between each activation
    and its conv (Fixup's scalar biases, else Identity).  ``input_scale`` is
    the NF-ResNets' 1/beta (Brock et al. 2021a), 1 for every other scheme.
    A conv shortcut sees the activated input a, the tensor the first conv sees.
    ``preactivated``: the input is already normalised and activated (the first block after the BN
    ImageNet stem), so a = x: no norm or activation of its own, as fb.resnet.torch's 'no_preact' block.
    """

    def __init__(
        self,
        branch: Sequence[nn.Conv2d],
        norms: Sequence[nn.Module],
        shortcut: nn.Module,
        act: nn.Module,
        gate: nn.Module,
        scale: float,
        stride: int,
        conv_biases: Optional[Sequence[nn.Module]] = None,
        input_scale: float = 1.0,
        preactivated: bool = False,
    ) -> None:
        super().__init__()
        assert len(branch) == len(norms)
        self.branch = nn.ModuleList(branch)
        self.norms = nn.ModuleList(norms)
        self.conv_biases = nn.ModuleList(conv_biases if conv_biases is not None else [nn.Identity() for _ in branch])
        self.shortcut = shortcut
        self.act = act
        self.gate = gate
        self.scale = scale
        self.stride = stride
        self.input_scale = input_scale
        self.preactivated = preactivated

    def _activated(self, x: torch.Tensor) -> torch.Tensor:
        if self.preactivated:
            return x
        x = x * self.input_scale if self.input_scale != 1.0 else x
        return self.conv_biases[0](self.act(self.norms[0](x)))

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """h(x), the shortcut path's value for block input x (before the factor c)."""
        return self.shortcut(self._activated(x)) if self.shortcut.takes_activated else self.shortcut(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self._activated(x)
        skip = self.shortcut(a if self.shortcut.takes_activated else x)
        out = self.branch[0](a)
        for norm, bias, conv in zip(self.norms[1:], self.conv_biases[1:], self.branch[1:]):
            out = conv(bias(self.act(norm(out))))
        out = skip + self.gate(out)
        return out * self.scale if self.scale != 1.0 else out

    def extra_repr(self) -> str:
        scaled = f", input_scale={self.input_scale:.4g}" if self.input_scale != 1.0 else ""
        preact = ", preactivated" if self.preactivated else ""
        return f"scale={self.scale:.4g}, stride={self.stride}{scaled}{preact}"


class FixupBasicBlock(Block):
    """Fixup's reference post-activation CIFAR block (hongyi-zhang/Fixup, ``fixup_resnet_cifar.py``).

    y = relu(h(x + b1a) + m * conv2(relu(conv1(x + b1a) + b1b) + b2a) + b2b), with
    h the identity or, where the block changes shape, the zero-padded option-A shortcut.
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int, conv: ConvFactory = plain_conv) -> None:
        super().__init__()
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = (ScalarBias(0.0) for _ in range(4))
        self.multiplier = ScalarGain(1.0)
        self.branch = nn.ModuleList([conv(in_chans, out_chans, 3, stride, 1), conv(out_chans, out_chans, 3, 1, 1)])
        changes_shape = stride != 1 or in_chans != out_chans
        self.shortcut = ZeroPadShortcut(in_chans, out_chans, stride) if changes_shape else IdentityShortcut()
        self.act = nn.ReLU()
        self.stride = stride

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        # The reference shortcut sees x + bias1a where it downsamples, the raw x otherwise.
        return self.shortcut(self.bias1a(x)) if self.transition else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bias1b(self.branch[0](self.bias1a(x))))
        out = self.bias2b(self.multiplier(self.branch[1](self.bias2a(out))))
        return self.act(out + self.skip(x))


class ScalarLRBiasLinear(nn.Linear):
    """A linear layer whose bias the optimiser treats as a scalar (lr x ``scalar_lr_mult``, the scalars'
    weight decay): tagged by type, so the groups never match parameter names."""


class Head(nn.Module):
    """norm -> act -> global average pool -> (pre_fc) -> linear (the pre-activation trunk's end).

    ``scalar_lr_bias`` puts the classifier's bias in the optimiser's scalars group (Fixup).
    """

    def __init__(
        self,
        norm: nn.Module,
        act: nn.Module,
        in_features: int,
        num_classes: int,
        pre_fc: Optional[nn.Module] = None,
        scalar_lr_bias: bool = False,
    ) -> None:
        super().__init__()
        self.norm, self.act = norm, act
        self.pre_fc = pre_fc if pre_fc is not None else nn.Identity()
        self.fc = (ScalarLRBiasLinear if scalar_lr_bias else nn.Linear)(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(F.adaptive_avg_pool2d(self.act(self.norm(x)), 1), 1)
        return self.fc(self.pre_fc(pooled))


class ResNet(nn.Module):
    stem: nn.Module
    blocks: Sequence[Block]  # an nn.ModuleList, which registers them
    head: nn.Module  # a Head, or timm's (nf_resnet.TimmNFHead): both have .fc

    def __init__(self, stem: nn.Module, blocks: Sequence[Block], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)  # type: ignore[assignment]  # its items are the Blocks given
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def split_stages(blocks: Iterable[Block]) -> list[list[Block]]:
    """Group blocks into stages: a stage starts at the first block and at every block that changes shape."""
    stages: list[list[Block]] = []
    for block in blocks:
        if not stages or block.transition:
            stages.append([])
        stages[-1].append(block)
    return stages


@dataclass(frozen=True)
class ResNetSpec:
    """Blocks per stage, stem width and block type; stage widths are width * widen * 2^i.

    ``widen`` is the wide-ResNet factor k (Zagoruyko & Komodakis 2016): the stem keeps
    ``width`` channels and the stages get k times more.
    """

    depths: tuple[int, ...]
    width: int
    bottleneck: bool
    widen: int = 1

    def widths(self, width: int | None = None) -> list[int]:
        w = (width or self.width) * self.widen
        return [w * 2**i for i in range(len(self.depths))]


def branch_convs(
    in_chans: int, width: int, stride: int, bottleneck: bool, conv: ConvFactory = plain_conv
) -> tuple[list[nn.Conv2d], int]:
    """The convs of f: two 3x3 (basic) or 1x1, 3x3 (strided), 1x1 with 4x expansion (bottleneck)."""
    if bottleneck:
        out = width * 4
        return [conv(in_chans, width, 1, 1, 0), conv(width, width, 3, stride, 1), conv(width, out, 1, 1, 0)], out
    return [conv(in_chans, width, 3, stride, 1), conv(width, width, 3, 1, 1)], width


def stem_layers(kind: str, in_chans: int, width: int, conv: ConvFactory = plain_conv) -> list[nn.Module]:
    """CIFAR stem (one 3x3 stride-1 conv) or ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool)."""
    if kind == "cifar":
        return [conv(in_chans, width, 3, 1, 1)]
    if kind == "imagenet":
        return [conv(in_chans, width, 7, 2, 3), nn.MaxPool2d(3, stride=2, padding=1)]
    raise ValueError(f"unknown stem '{kind}'; choose cifar or imagenet")


class ModelScheme(Protocol):
    """What building a network asks of an initialisation scheme (:class:`nfbench.schemes.Scheme` is the
    implementation): its parts, assembled by :func:`build_resnet`, and its initialisation.  Stated
    here so that models need not import the schemes that build on them."""

    cfg: Any  # its InitConfig
    weights: str  # the weight rule it applies (init.weights, else its default)

    @property
    def name(self) -> str: ...

    def stem(self, kind: str, in_chans: int, width: int) -> nn.Module: ...

    def stem_activates(self, kind: str) -> bool: ...

    def block(
        self, in_chans: int, width: int, stride: int, bottleneck: bool, input_var: float, preactivated: bool = False
    ) -> Block: ...

    def next_input_var(self, input_var: float, block: Block) -> float: ...

    def head(self, chans: int, num_classes: int) -> Head: ...

    def initialise(self, net: ResNet) -> None: ...


def build_resnet(
    spec: ResNetSpec,
    scheme: ModelScheme,
    num_classes: int,
    in_chans: int = 3,
    stem: str = "cifar",
    width: int | None = None,
) -> ResNet:
    """Assemble a ResNet from the scheme's stem, blocks and head.

    ``input_var`` is the residual stream's expected variance at each block input as the
    scheme predicts it; only the NF-ResNets use it, for their beta (Brock et al. 2021a).
    After a stem that ends normalised and activated, the first block is built ``preactivated``.
    """
    stem_width = width or spec.width
    stem_mod = scheme.stem(stem, in_chans, stem_width)
    stem_activates = scheme.stem_activates(stem)
    blocks: list[Block] = []
    chans, input_var = stem_width, 1.0
    for stage, (depth, w) in enumerate(zip(spec.depths, spec.widths(width))):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            block = scheme.block(
                chans, w, stride, spec.bottleneck, input_var, preactivated=stem_activates and not blocks
            )
            input_var = scheme.next_input_var(input_var, block)
            blocks.append(block)
            chans = block.out_chans
    return ResNet(stem_mod, blocks, scheme.head(chans, num_classes))
