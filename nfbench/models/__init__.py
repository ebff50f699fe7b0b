"""The model registry (``model=``): every architecture of docs/science.md#architectures.

Each registered model is a planner: given its config and the scheme, it applies the rules that
guard its construction (WRN's depth, Fixup's reference block on basic blocks only, timm's NF-ResNets
with init=nf only, He et al. 2016a's BatchNorm network with init=bn only) and returns a builder for
the data set's shape.  :func:`plan_model` runs it once per run, before any data loads
(:func:`nfbench.engine.validation.validate`), and training builds from that.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from nfbench.config import ModelConfig, require
from nfbench.errors import ConfigError
from nfbench.models.he_resnet import PostActivationBasicBlock, he_cifar_resnet, he_cifar_spec
from nfbench.models.nf_resnet import TimmNFBlock, timm_nf_resnet
from nfbench.models.resnet import (
    Block,
    ConvShortcut,
    FixupBasicBlock,
    Head,
    IdentityShortcut,
    ModelScheme,
    ResidualBlock,
    ResNet,
    ResNetSpec,
    Scalar,
    ScalarBias,
    ScalarGain,
    ScalarLRBiasLinear,
    ScaledIdentityShortcut,
    ZeroPadShortcut,
    build_resnet,
    split_stages,
)
from nfbench.registry import Registry

# (num_classes, in_chans, image_size) -> the network, uninitialised: what is left once every rule has passed.
Builder = Callable[[int, int, int], ResNet]
# A registered model: applies the rules of (its config, the scheme) and returns its builder.
Planner = Callable[[ModelConfig, ModelScheme], Builder]
MODELS: Registry[Planner] = Registry("model")

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

# timm's NF-ResNets (Brock et al. 2021a): their blocks *are* the nf scheme, so only init=nf builds them.
TIMM_NF_MODELS = ("nf_resnet26", "nf_resnet50", "nf_resnet101")
TIMM_NF_STAGE1_WIDTH = 64

# He et al. 2016a's own CIFAR networks (section 4.2, Table 6): post-activation, option-A shortcuts, BatchNorm
# built in, so only init=bn builds them.  nfbench's resnet20..resnet110 are the pre-activation ResNets.
HE_CIFAR_DEPTHS = (20, 32, 44, 56, 110)
HE_CIFAR_MODELS = tuple(f"he_resnet{d}" for d in HE_CIFAR_DEPTHS)


def choose_stem(stem: str, image_size: int) -> str:
    if stem != "auto":
        return str(stem)
    return "cifar" if image_size <= CIFAR_STEM_MAX_SIZE else "imagenet"


def _resnet(spec: ResNetSpec, cfg: ModelConfig, scheme: ModelScheme) -> Builder:
    """nfbench's pre-activation ResNets, blocks from the scheme; Fixup's reference block is a basic block."""
    if getattr(scheme, "reference", False) and spec.bottleneck:
        raise ConfigError(
            f"init.reference_block=true builds Fixup's post-activation basic CIFAR block; "
            f"model={cfg.name} has no basic blocks: choose resnet20/32/44/56/110, resnet18/34 or wrn"
        )

    def build(num_classes: int, in_chans: int, image_size: int) -> ResNet:
        return build_resnet(spec, scheme, num_classes, in_chans, choose_stem(cfg.stem, image_size), cfg.width)

    return build


for _name, _spec in RESNET_SPECS.items():
    MODELS.register(_name)(partial(_resnet, _spec))


def wrn_spec(depth: int, widen: int) -> ResNetSpec:
    """WRN-depth-widen: three stages of n = (depth - 4) / 6 basic blocks, 16k-32k-64k channels, 16-channel stem."""
    require(
        depth >= 10 and (depth - 4) % 6 == 0,
        "model.depth",
        depth,
        "must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...)",
    )
    require(widen >= 1, "model.widen", widen, "must be >= 1")
    return ResNetSpec(((depth - 4) // 6,) * 3, 16, bottleneck=False, widen=widen)


@MODELS.register("wrn")
def wide_resnet(cfg: ModelConfig, scheme: ModelScheme) -> Builder:
    return _resnet(wrn_spec(cfg.depth, cfg.widen), cfg, scheme)  # type: ignore[attr-defined]  # WideResNetConfig


def _timm_nf(name: str, cfg: ModelConfig, scheme: ModelScheme) -> Builder:
    """timm's NF-ResNet: its blocks are the nf scheme's, its stem the ImageNet one, its identity start timm's."""
    if scheme.name != "nf":
        raise ConfigError(
            f"model={name} is timm's NF-ResNet, whose blocks are the nf scheme's (scaled weight-standardised "
            f"convs, alpha/beta residuals); use init=nf with it, or a pre-activation ResNet such as "
            f"model=resnet50 with init={scheme.name}"
        )
    if cfg.stem == "cifar":
        raise ConfigError(
            f"model.stem=cifar is not available for model={name}: timm's NF-ResNets have the "
            f"ImageNet stem only; use model.stem=auto or imagenet"
        )
    if scheme.cfg.skip_gain != 0.0:
        raise ConfigError(
            f"init.skip_gain applies to nfbench's own ResNets; model={name} starts every "
            f"block as the identity through timm's zero-initialised gain of its last conv"
        )
    # model.width scales every stage as timm's width_factor does (channels rounded to multiples of 8).
    extra = {"width_factor": cfg.width / TIMM_NF_STAGE1_WIDTH} if cfg.width else {}

    def build(num_classes: int, in_chans: int, image_size: int) -> ResNet:
        return timm_nf_resnet(name, num_classes, in_chans, alpha=scheme.cfg.alpha, **extra)

    return build


for _name in TIMM_NF_MODELS:
    MODELS.register(_name)(partial(_timm_nf, _name))


def _he_resnet(depth: int, cfg: ModelConfig, scheme: ModelScheme) -> Builder:
    """He et al. 2016a's CIFAR network: its BatchNorm and option-A shortcuts are architecture, so it is started
    by init=bn alone (every conv by init.weights, BN reset, the classifier's default) and has the CIFAR stem."""
    name = cfg.name
    if scheme.name != "bn":
        raise ConfigError(
            f"model={name} is He et al. 2016a's BatchNorm network (post-activation blocks, BatchNorm built in); "
            f"use init=bn with it, or the pre-activation model=resnet{depth} with init={scheme.name}"
        )
    if scheme.cfg.conv_shortcut:
        raise ConfigError(
            f"init.conv_shortcut=true puts a 1x1 conv shortcut in nfbench's pre-activation ResNets; "
            f"model={name} has He et al. 2016a's parameter-free option-A shortcuts: use init=bn "
            f"without init.conv_shortcut, or model=resnet{depth}"
        )
    if cfg.stem == "imagenet":
        raise ConfigError(
            f"model.stem=imagenet is not available for model={name}: He et al. 2016a's CIFAR "
            f"network has the CIFAR stem only (one 3x3 conv); use model.stem=auto or cifar"
        )
    spec = he_cifar_spec(depth)

    def build(num_classes: int, in_chans: int, image_size: int) -> ResNet:
        return he_cifar_resnet(spec, num_classes, in_chans, cfg.width)

    return build


for _depth, _name in zip(HE_CIFAR_DEPTHS, HE_CIFAR_MODELS):
    MODELS.register(_name)(partial(_he_resnet, _depth))


@dataclass(frozen=True)
class ModelPlan:
    """A model config and scheme that passed every rule of the pair: only construction is left, which
    needs the data set's shape.  Planned once per run, before any data loads; trained from."""

    cfg: ModelConfig
    scheme: ModelScheme
    builder: Builder

    def construct(self, num_classes: int, in_chans: int, image_size: int) -> ResNet:
        """The network with the scheme's blocks, uninitialised (e.g. on the meta device)."""
        return self.builder(num_classes, in_chans, image_size)

    def build(self, num_classes: int, in_chans: int, image_size: int) -> ResNet:
        """The network, started by the scheme's initialisation."""
        net = self.construct(num_classes, in_chans, image_size)
        self.scheme.initialise(net)
        return net


def plan_model(cfg: ModelConfig, scheme: ModelScheme) -> ModelPlan:
    """The model's name against the registry, then the rules of (model, scheme), each in the planner
    of the model it guards; ConfigError, naming the fix, for a pair that cannot be built."""
    return ModelPlan(cfg, scheme, MODELS.get(cfg.name)(cfg, scheme))


def construct_model(cfg: ModelConfig, scheme: ModelScheme, num_classes: int, in_chans: int, image_size: int) -> ResNet:
    """Plan and build the configured architecture with the scheme's blocks, uninitialised."""
    return plan_model(cfg, scheme).construct(num_classes, in_chans, image_size)


def build_model(cfg: ModelConfig, scheme: ModelScheme, num_classes: int, in_chans: int, image_size: int) -> ResNet:
    """Plan and build the configured architecture with the scheme's blocks, then apply the scheme's init."""
    return plan_model(cfg, scheme).build(num_classes, in_chans, image_size)


__all__ = [
    "MODELS",
    "ModelPlan",
    "plan_model",
    "build_model",
    "construct_model",
    "choose_stem",
    "ResNet",
    "Block",
    "ResidualBlock",
    "FixupBasicBlock",
    "TimmNFBlock",
    "PostActivationBasicBlock",
    "Head",
    "Scalar",
    "ScalarGain",
    "ScalarBias",
    "ScalarLRBiasLinear",
    "ConvShortcut",
    "IdentityShortcut",
    "ScaledIdentityShortcut",
    "ZeroPadShortcut",
    "ModelScheme",
    "RESNET_SPECS",
    "TIMM_NF_MODELS",
    "HE_CIFAR_MODELS",
    "split_stages",
    "wrn_spec",
]
