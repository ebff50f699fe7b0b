"""Normalization-free schemes (``init=``): residual sum, branch normalisation, initialisation.

SPEC section 2.  A scheme builds the parts of every residual block (norm,
shortcut, gate, the constant c of x_l = c * (h(x) + f(x))) and then
initialises the whole network in :meth:`Scheme.initialise`, under no_grad,
from the structure the model exposes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nfbench.config import InitConfig
from nfbench.models.resnet import ConvShortcut, IdentityShortcut, ScaledIdentityShortcut
from nfbench.registry import Registry

# Brock et al. 2021a: gamma_g^2 = 2 / (1 - 1/pi), the ReLU correction (Civitelli et al. eq. 3).
BROCK_GAMMA = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))
WEIGHT_RULES = ("he_fanin", "he_fanout", "brock")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """n_in = k*k*c_in and n_out = k*k*c_out of a conv (or linear) weight."""
    receptive = weight[0, 0].numel()
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def init_weight_(weight: torch.Tensor, rule: str, standardize: bool = True, gain: float = 1.0) -> torch.Tensor:
    """Sample ``weight`` by ``rule``; with ``standardize``, force the empirical moments to the target.

    he_fanin: Var = 2/n_in, he_fanout: Var = 2/n_out (He et al. 2015, Civitelli et al. eqs. 1-2);
    brock: Var = gamma^2/n_in per output channel (Brock et al. 2021a, Civitelli et al. eq. 3).
    Standardisation is per layer for He's rules and per output channel for Brock's
    (Civitelli et al. section 4).  ``gain`` multiplies the standard deviation.
    """
    n_in, n_out = fans(weight)
    if rule == "he_fanin":
        std, per_channel = math.sqrt(2.0 / n_in), False
    elif rule == "he_fanout":
        std, per_channel = math.sqrt(2.0 / n_out), False
    elif rule == "brock":
        std, per_channel = BROCK_GAMMA / math.sqrt(n_in), True
    else:
        raise ValueError(f"unknown weight rule '{rule}'; choose one of {', '.join(WEIGHT_RULES)}")
    std *= gain
    weight.normal_(0.0, std)
    if standardize and weight.numel() > 1:
        if per_channel and n_in > 1:
            flat = weight.view(weight.shape[0], -1)
            mean = flat.mean(dim=1, keepdim=True)
            sd = flat.std(dim=1, keepdim=True, unbiased=False)
            flat.sub_(mean).div_(sd).mul_(std)
        else:
            weight.sub_(weight.mean()).div_(weight.std(unbiased=False)).mul_(std)
    return weight


class Scheme:
    """The default residual block: identity shortcut, c = 1, no norm, He fan-in.

    Subclasses change the class attributes or override the factory methods.
    Where a block changes resolution or width, its shortcut is a 1x1 conv
    (Civitelli et al. footnote 1, "as in the standard implementation").
    """

    default_weights = "he_fanin"
    residual_scale = 1.0
    batchnorm = False
    conv_shortcut_everywhere = False

    def __init__(self, cfg: InitConfig | None = None) -> None:
        self.cfg = cfg or InitConfig(name=self.name)
        self.weights = self.cfg.weights or self.default_weights
        if self.weights not in WEIGHT_RULES:
            from nfbench.errors import ConfigError

            raise ConfigError(f"init.weights={self.weights!r} is not allowed: choose one of {', '.join(WEIGHT_RULES)}")

    @property
    def name(self) -> str:
        return SCHEME_NAMES[type(self)]

    # --- parts of a block -------------------------------------------------
    def norm(self, chans: int) -> nn.Module:
        return nn.BatchNorm2d(chans) if self.batchnorm else nn.Identity()

    def act(self) -> nn.Module:
        return nn.ReLU(inplace=False)

    def identity_shortcut(self) -> nn.Module:
        return IdentityShortcut()

    def shortcut(self, in_chans: int, out_chans: int, stride: int) -> nn.Module:
        if self.conv_shortcut_everywhere or in_chans != out_chans or stride != 1:
            return ConvShortcut(in_chans, out_chans, stride)
        return self.identity_shortcut()

    def gate(self) -> nn.Module:
        return nn.Identity()

    # --- initialisation -----------------------------------------------------
    @torch.no_grad()
    def initialise(self, net: nn.Module) -> None:
        """Every conv by the weight rule, norms to (1, 0); the classifier keeps PyTorch's default
        nn.Linear init (as torchvision's ResNets do), re-drawn here so it follows the seed."""
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                init_weight_(m.weight, self.weights, self.cfg.standardize)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                m.reset_parameters()


SCHEMES: Registry[type[Scheme]] = Registry("init scheme")
SCHEME_NAMES: dict[type, str] = {}


def register_scheme(name: str):
    def add(cls: type[Scheme]) -> type[Scheme]:
        SCHEMES.register(name)(cls)
        SCHEME_NAMES[cls] = name
        return cls

    return add


@register_scheme("bn")
class BatchNormBaseline(Scheme):
    """Standard pre-activation ResNet: BatchNorm before every activation, He fan-in (He et al. 2016b)."""

    batchnorm = True


@register_scheme("plain")
class Plain(Scheme):
    """The same ResNet with the BatchNorm layers removed: x_l = x + f(x)."""


@register_scheme("idshort")
class IdShort(Scheme):
    """Scaled identity shortcut: h(x) = x, c = sqrt(0.5), He fan-out (Civitelli et al. sec. 3.3, item 1)."""

    default_weights = "he_fanout"
    residual_scale = math.sqrt(0.5)


@register_scheme("learnscalar")
class LearnScalar(IdShort):
    """h(x) = alpha x, alpha learnable, init 1; c = sqrt(0.5) (Civitelli et al. sec. 3.3, item 2)."""

    def identity_shortcut(self) -> nn.Module:
        return ScaledIdentityShortcut(1.0)


@register_scheme("convshort")
class ConvShort(IdShort):
    """h(x) = W_s x, a 1x1 conv on every block, He fan-out; c = sqrt(0.5) (Civitelli et al. sec. 3.3, item 3)."""

    conv_shortcut_everywhere = True


def build_scheme(cfg: InitConfig) -> Scheme:
    return SCHEMES.get(cfg.name)(cfg)
