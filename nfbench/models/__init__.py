"""The model registry (``model=``): every architecture of SPEC section 1."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

from torch import nn

from nfbench.config import ModelConfig
from nfbench.models.resnet import (ConvShortcut, Head, IdentityShortcut, ResidualBlock, ResNet, ResNetSpec,
                                   Scalar, ScalarBias, ScalarGain, ScaledIdentityShortcut, build_resnet)
from nfbench.registry import Registry

if TYPE_CHECKING:
    from nfbench.schemes import Scheme

ModelBuilder = Callable[[ModelConfig, "Scheme", int, int, int], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")

# Images up to this size get the CIFAR stem (3x3 conv, no pooling); larger ones the ImageNet stem.
CIFAR_STEM_MAX_SIZE = 64

RESNET_SPECS = {
    # CIFAR-style pre-activation ResNets with the ImageNet widths (Civitelli et al. Tables 1-2).
    "resnet18": ResNetSpec((2, 2, 2, 2), 64, bottleneck=False),
    "resnet34": ResNetSpec((3, 4, 6, 3), 64, bottleneck=False),
    "resnet50": ResNetSpec((3, 4, 6, 3), 64, bottleneck=True),
    "resnet101": ResNetSpec((3, 4, 23, 3), 64, bottleneck=True),
    "resnet152": ResNetSpec((3, 8, 36, 3), 64, bottleneck=True),
    # He et al. (2016a) CIFAR family: three stages of n = (depth - 2) / 6 basic blocks, 16-32-64.
    **{f"resnet{d}": ResNetSpec((((d - 2) // 6),) * 3, 16, bottleneck=False) for d in (20, 32, 44, 56, 110)},
}


def choose_stem(stem: str, image_size: int) -> str:
    if stem != "auto":
        return stem
    return "cifar" if image_size <= CIFAR_STEM_MAX_SIZE else "imagenet"


def _resnet(spec: ResNetSpec, cfg: ModelConfig, scheme: "Scheme", num_classes: int, in_chans: int,
            image_size: int) -> ResNet:
    return build_resnet(spec, scheme, num_classes, in_chans, choose_stem(cfg.stem, image_size), cfg.width)


for _name, _spec in RESNET_SPECS.items():
    MODELS.register(_name)(partial(_resnet, _spec))


def build_model(cfg: ModelConfig, scheme: "Scheme", num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Build the configured architecture with the scheme's blocks, then apply the scheme's init."""
    net = MODELS.get(cfg.name)(cfg, scheme, num_classes, in_chans, image_size)
    scheme.initialise(net)
    return net


__all__ = ["MODELS", "build_model", "ResNet", "ResidualBlock", "Head", "Scalar", "ScalarGain", "ScalarBias",
           "ConvShortcut", "IdentityShortcut", "ScaledIdentityShortcut", "RESNET_SPECS"]
