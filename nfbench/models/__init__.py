"""The model registry (``model=``): every architecture of SPEC section 1."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from nfbench.config import ModelConfig
from nfbench.errors import ConfigError
from nfbench.models.nf_resnet import TimmNFBlock, timm_nf_resnet
from nfbench.models.resnet import (Block, ConvShortcut, FixupBasicBlock, Head, IdentityShortcut, ModelScheme,
                                   ResidualBlock, ResNet, ResNetSpec, Scalar, ScalarBias, ScalarGain,
                                   ScalarLRBiasLinear, ScaledIdentityShortcut, ZeroPadShortcut, build_resnet,
                                   split_stages)
from nfbench.registry import Registry

ModelBuilder = Callable[[ModelConfig, ModelScheme, int, int, int], nn.Module]
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

# Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016): WRN-28-10 unless model.depth / model.widen say otherwise.
WRN_DEPTH, WRN_WIDEN = 28, 10
# timm's NF-ResNets (Brock et al. 2021a): their blocks *are* the nf scheme, so only init=nf builds them.
TIMM_NF_MODELS = ("nf_resnet26", "nf_resnet50", "nf_resnet101")
TIMM_NF_STAGE1_WIDTH = 64


def choose_stem(stem: str, image_size: int) -> str:
    if stem != "auto":
        return stem
    return "cifar" if image_size <= CIFAR_STEM_MAX_SIZE else "imagenet"


def _resnet(spec: ResNetSpec, cfg: ModelConfig, scheme: ModelScheme, num_classes: int, in_chans: int,
            image_size: int) -> ResNet:
    return build_resnet(spec, scheme, num_classes, in_chans, choose_stem(cfg.stem, image_size), cfg.width)


for _name, _spec in RESNET_SPECS.items():
    MODELS.register(_name)(partial(_resnet, _spec))


def wrn_spec(depth: int, widen: int) -> ResNetSpec:
    """WRN-depth-widen: three stages of n = (depth - 4) / 6 basic blocks, 16k-32k-64k channels, 16-channel stem."""
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"model.depth={depth} is not allowed for model=wrn: must be 6n + 4 with n >= 1 (10, 16, 28, 40, ...)")
    return ResNetSpec(((depth - 4) // 6,) * 3, 16, bottleneck=False, widen=widen)


@MODELS.register("wrn")
def wide_resnet(cfg: ModelConfig, scheme: ModelScheme, num_classes: int, in_chans: int, image_size: int) -> ResNet:
    spec = wrn_spec(cfg.depth or WRN_DEPTH, cfg.widen or WRN_WIDEN)
    return _resnet(spec, cfg, scheme, num_classes, in_chans, image_size)


def _timm_nf(name: str, cfg: ModelConfig, scheme: ModelScheme, num_classes: int, in_chans: int,
             image_size: int) -> ResNet:
    # model.width scales every stage as timm's width_factor does (channels rounded to multiples of 8).
    extra = {"width_factor": cfg.width / TIMM_NF_STAGE1_WIDTH} if cfg.width else {}
    alpha = scheme.alpha  # type: ignore[attr-defined]  # the nf scheme's: check_compatible admits no other
    return timm_nf_resnet(name, num_classes, in_chans, alpha=alpha, **extra)


for _name in TIMM_NF_MODELS:
    MODELS.register(_name)(partial(_timm_nf, _name))


def check_compatible(cfg: ModelConfig, scheme: ModelScheme) -> None:
    """Raise ConfigError, naming the fix, for a (model, init) pair that cannot be built."""
    if cfg.name in TIMM_NF_MODELS:
        if scheme.name != "nf":
            raise ConfigError(
                f"model={cfg.name} is timm's NF-ResNet, whose blocks are the nf scheme's (scaled weight-standardised "
                f"convs, alpha/beta residuals); use init=nf with it, or a pre-activation ResNet such as "
                f"model=resnet50 with init={scheme.name}")
        if cfg.stem == "cifar":
            raise ConfigError(f"model.stem=cifar is not available for model={cfg.name}: timm's NF-ResNets have the "
                              f"ImageNet stem only; use model.stem=auto or imagenet")
        if getattr(scheme.cfg, "skip_gain", None) not in (None, 0.0):
            raise ConfigError(f"init.skip_gain applies to nfbench's own ResNets; model={cfg.name} starts every "
                              f"block as the identity through timm's zero-initialised gain of its last conv")
    if getattr(scheme, "reference", False):
        spec = RESNET_SPECS.get(cfg.name)
        if cfg.name != "wrn" and (spec is None or spec.bottleneck):
            raise ConfigError(f"init.reference_block=true builds Fixup's post-activation basic CIFAR block; "
                              f"model={cfg.name} has no basic blocks: choose resnet20/32/44/56/110, resnet18/34 or wrn")


def construct_model(cfg: ModelConfig, scheme: ModelScheme, num_classes: int, in_chans: int,
                    image_size: int) -> nn.Module:
    """Build the configured architecture with the scheme's blocks, uninitialised (e.g. on the meta device)."""
    check_compatible(cfg, scheme)
    return MODELS.get(cfg.name)(cfg, scheme, num_classes, in_chans, image_size)


def build_model(cfg: ModelConfig, scheme: ModelScheme, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Build the configured architecture with the scheme's blocks, then apply the scheme's init."""
    net = construct_model(cfg, scheme, num_classes, in_chans, image_size)
    scheme.initialise(net)
    return net


__all__ = ["MODELS", "build_model", "construct_model", "check_compatible", "choose_stem", "ResNet", "Block",
           "ResidualBlock", "FixupBasicBlock", "TimmNFBlock", "Head", "Scalar", "ScalarGain", "ScalarBias",
           "ScalarLRBiasLinear", "ConvShortcut", "IdentityShortcut", "ScaledIdentityShortcut", "ZeroPadShortcut",
           "ModelScheme", "RESNET_SPECS", "TIMM_NF_MODELS", "split_stages", "wrn_spec"]
