"""Normalization-free schemes (``init=``): residual sum, branch normalisation, initialisation.

docs/science.md#schemes.  A scheme builds the parts of every residual block (conv,
norm, shortcut, gate, the constant c of x_l = c * (h(x) + f(x))), the stem and
the head; then its own ``initialise`` starts every tensor of the built network,
under no_grad, from the structure the model exposes (``net.blocks``,
``block.branch``, ``net.head.fc``).  Each registered scheme has one such function,
whose docstring is the table of what every tensor starts as and why (as
karpathy/nanochat's ``init_weights``); no scheme's init calls another's.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from nfbench.config import InitConfig, WeightRule, option_config
from nfbench.errors import ConfigError
from nfbench.models.resnet import (
    Block,
    ConvShortcut,
    FixupBasicBlock,
    Head,
    IdentityShortcut,
    ResidualBlock,
    ResNet,
    Scalar,
    ScalarBias,
    ScalarGain,
    ScaledIdentityShortcut,
    ScaledReLU,
    ScaledSkipGain,
    branch_convs,
    plain_conv,
    split_stages,
    stem_layers,
)
from nfbench.registry import Registry

# Brock et al. 2021a: gamma_g^2 = 2 / (1 - 1/pi), the ReLU correction (Civitelli et al. eq. 3).
BROCK_GAMMA = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))
# The same constant as DeepMind's NF-ResNet code (and timm) estimate it numerically; the `nf` scheme's.
NF_RELU_GAMMA = 1.7139588594436646
# timm's NF-ResNet epsilon inside the weight standardisation.
NF_STD_EPS = 1e-5
WEIGHT_RULES = tuple(rule.value for rule in WeightRule)


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """n_in = k*k*c_in and n_out = k*k*c_out of a conv (or linear) weight."""
    receptive = weight[0, 0].numel()
    return weight.shape[1] * receptive, weight.shape[0] * receptive


# Each init.weights rule: (n_in, n_out) -> (the target standard deviation, standardised per output channel).
_RULE_STDS: dict[str, Callable[[int, int], tuple[float, bool]]] = {
    "he_fanin": lambda n_in, n_out: (math.sqrt(2.0 / n_in), False),
    "he_fanout": lambda n_in, n_out: (math.sqrt(2.0 / n_out), False),
    "brock": lambda n_in, n_out: (BROCK_GAMMA / math.sqrt(n_in), True),
}


@torch.no_grad()
def init_weight_(weight: torch.Tensor, rule: str, standardize: bool = True, gain: float = 1.0) -> torch.Tensor:
    """Sample ``weight`` by ``rule``; with ``standardize``, force the empirical moments to the target.

    he_fanin: Var = 2/n_in, he_fanout: Var = 2/n_out (He et al. 2015, Civitelli et al. eqs. 1-2);
    brock: Var = gamma^2/n_in per output channel (Brock et al. 2021a, Civitelli et al. eq. 3).
    Standardisation is per layer for He's rules and per output channel for Brock's
    (Civitelli et al. section 4).  ``gain`` multiplies the standard deviation.
    """
    n_in, n_out = fans(weight)
    std, per_channel = _RULE_STDS[rule](n_in, n_out)
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
    # The init.weights values the scheme can apply (NF and WN reparametrise their convs instead).
    weight_rules: tuple[str, ...] = WEIGHT_RULES
    residual_scale = 1.0
    batchnorm = False
    conv_shortcut_everywhere = False

    def __init__(self, cfg: InitConfig | None = None) -> None:
        """``init.weights`` and ``init.stem_weights`` are checked here, once: the rules this scheme applies."""
        self.cfg = cfg or option_config("init", self.name)
        self.weights = weight_rule(self.name, self._allowed("weights"))
        # The stem conv sees raw pixels (3 channels), where the rules differ most: its own key (docs/schemes.md).
        self.stem_weights = str(self._allowed("stem_weights") or self.weights)

    def _allowed(self, key: str) -> Optional[str]:
        """``init.<key>``, refused unless it is one of the rules this scheme applies (None: unset)."""
        value = getattr(self.cfg, key)
        if value is not None and value not in self.weight_rules:
            allowed = (
                f"choose one of {', '.join(self.weight_rules)}"
                if self.weight_rules
                else f"init={self.name} sets every weight itself ({self.default_weights}); leave init.{key} unset"
            )
            raise ConfigError(f"init.{key}={value!r} is not allowed with init={self.name}: {allowed}")
        return value

    @property
    def name(self) -> str:
        return SCHEME_NAMES[type(self)]

    # --- parts of a block -------------------------------------------------
    def conv(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
        return plain_conv(in_chans, out_chans, kernel_size, stride, padding)

    def norm(self, chans: int) -> nn.Module:
        return nn.BatchNorm2d(chans) if self.batchnorm else nn.Identity()

    def act(self) -> nn.Module:
        return nn.ReLU(inplace=False)

    def conv_bias(self) -> nn.Module:
        """What sits between an activation and the conv after it."""
        return nn.Identity()

    def identity_shortcut(self) -> nn.Module:
        return IdentityShortcut()

    def shortcut(self, in_chans: int, out_chans: int, stride: int) -> nn.Module:
        if self.conv_shortcut_everywhere or in_chans != out_chans or stride != 1:
            return ConvShortcut(in_chans, out_chans, stride, self.conv)
        return self.identity_shortcut()

    def gate(self) -> nn.Module:
        return nn.Identity()

    def input_scale(self, input_var: float) -> float:
        """The factor on the block input before the branch (NF-ResNets' 1/beta); 1 elsewhere."""
        return 1.0

    def next_input_var(self, input_var: float, block: Block) -> float:
        """The expected variance after ``block``; only the NF-ResNets track it, the others keep 1."""
        return input_var

    # --- the network's pieces, assembled by build_resnet ---------------------
    def stem_activates(self, kind: str) -> bool:
        """Whether the stem ends normalised and activated: with BatchNorm, the ImageNet stem, as He et al.
        2016b's pre-activation ResNet (fb.resnet.torch ``preresnet.lua``) and torchvision build it."""
        return self.batchnorm and kind == "imagenet"

    def stem(self, kind: str, in_chans: int, width: int) -> nn.Module:
        """The bare stem, or conv -> BN -> ReLU -> max-pool where :meth:`stem_activates`."""
        layers = stem_layers(kind, in_chans, width, self.conv)
        if self.stem_activates(kind):
            conv, pool = layers
            layers = [conv, self.norm(width), self.act(), pool]
        return nn.Sequential(*layers)

    def block(
        self, in_chans: int, width: int, stride: int, bottleneck: bool, input_var: float, preactivated: bool = False
    ) -> Block:
        """One residual block; ``preactivated`` (the first block after an activating stem) has no norm or
        activation before its first conv and shortcut (fb.resnet.torch ``preresnet.lua``, 'no_preact')."""
        convs, out = branch_convs(in_chans, width, stride, bottleneck, self.conv)
        norms = [nn.Identity() if preactivated and i == 0 else self.norm(c.in_channels) for i, c in enumerate(convs)]
        return ResidualBlock(
            convs,
            norms,
            self.shortcut(in_chans, out, stride),
            self.act(),
            self.gate(),
            self.residual_scale,
            stride,
            conv_biases=[self.conv_bias() for _ in convs],
            input_scale=self.input_scale(input_var),
            preactivated=preactivated,
        )

    def head(self, chans: int, num_classes: int) -> Head:
        return Head(self.norm(chans), self.act(), chans, num_classes)

    # --- initialisation -----------------------------------------------------
    def initialise(self, net: ResNet) -> None:
        """Start every tensor of ``net``; each registered scheme defines its own, with its table."""
        raise NotImplementedError(f"{type(self).__name__} states no initialisation")


# --- helpers the schemes' initialise functions share -----------------------------------------------


@torch.no_grad()
def draw_convs_and_classifier_(net: ResNet, rule: str, standardize: bool, stem_rule: str | None = None) -> None:
    """Every nn.Conv2d by ``rule`` in module order, the stem's (``net.stem``) by ``stem_rule``
    (``init.stem_weights``; None: ``rule``), BatchNorm to (1, 0) with fresh running statistics,
    then the classifier's PyTorch default (kaiming-uniform weight, U(+-1/sqrt(fan_in)) bias, as
    torchvision's ResNets keep it), redrawn so that it follows the seed.

    The order of the draws is the RNG stream every seeded result so far was made with: keep it.
    The stem's rule changes only its scale, never the number of draws.
    """
    stem = {id(m) for m in net.stem.modules()}
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            init_weight_(m.weight, (stem_rule or rule) if id(m) in stem else rule, standardize)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
    net.head.fc.reset_parameters()


@torch.no_grad()
def fill_(scalars: Iterable[Scalar], value: float) -> None:
    """Set learnable scalars (gates, gains, scalar biases) to their start value; draws nothing."""
    for s in scalars:
        s.weight.fill_(value)


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
    """Standard pre-activation ResNet: BatchNorm before every activation, He fan-in (He et al. 2016b).

    With the ImageNet stem (conv -> BN -> ReLU -> max-pool) the first block takes the stem's activated
    output as its own pre-activation (fb.resnet.torch ``preresnet.lua``, 'no_preact').

    ``init.conv_shortcut=true`` puts ConvShort's 1x1 conv shortcut in every block: the network whose
    parameter counts Civitelli et al. Tables 1-2 print as "BatchNorm" (docs/schemes.md).
    """

    batchnorm = True

    def __init__(self, cfg: InitConfig | None = None) -> None:
        super().__init__(cfg)
        self.conv_shortcut_everywhere = self.cfg.conv_shortcut

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """He et al. 2016b's baseline, every conv by ``init.weights`` (rules in :func:`init_weight_`).

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | ``init.stem_weights``, else ``init.weights`` (he_fanin: Var 2/n_in), standardised | He et al. 2015; Civitelli et al. eq. 1, sec. 4 |
        | branch convs | the same rule | He et al. 2016b |
        | last branch conv | the same rule | He et al. 2016b |
        | shortcut convs | the same rule (transition blocks; every block with ``init.conv_shortcut``) | Civitelli et al. footnote 1, sec. 3.3 item 3 |
        | scalars | none | |
        | biases | none: the convs are bias-free | He et al. 2016b |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | weight 1, bias 0; running mean 0, variance 1 | Ioffe & Szegedy 2015 |
        """
        draw_convs_and_classifier_(net, self.weights, self.cfg.standardize, self.stem_weights)


@register_scheme("plain")
class Plain(Scheme):
    """The same ResNet with the BatchNorm layers removed: x_l = x + f(x)."""

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """The baseline without BatchNorm (the paper plots it with he_fanin and he_fanout).

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | ``init.stem_weights``, else ``init.weights`` (he_fanin: Var 2/n_in), standardised | He et al. 2015; Civitelli et al. eq. 1, sec. 4 |
        | branch convs | the same rule | Civitelli et al. sec. 4 |
        | last branch conv | the same rule | Civitelli et al. sec. 4 |
        | shortcut convs | the same rule (transition blocks only) | Civitelli et al. footnote 1 |
        | scalars | none | |
        | biases | none: the convs are bias-free | |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | none | |
        """
        draw_convs_and_classifier_(net, self.weights, self.cfg.standardize, self.stem_weights)


@register_scheme("idshort")
class IdShort(Scheme):
    """Scaled identity shortcut: h(x) = x, c = sqrt(0.5), He fan-out (Civitelli et al. sec. 3.3, item 1)."""

    default_weights = "he_fanout"
    residual_scale = math.sqrt(0.5)

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """IdShort: every conv by ``init.weights``; c = sqrt(0.5) is architecture, not a tensor.

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | ``init.stem_weights``, else ``init.weights`` (he_fanout: Var 2/n_out), standardised | Civitelli et al. eq. 2, sec. 4 |
        | branch convs | the same rule | Civitelli et al. sec. 3.3, item 1 |
        | last branch conv | the same rule | Civitelli et al. sec. 3.3, item 1 |
        | shortcut convs | the same rule (transition blocks only) | Civitelli et al. footnote 1 |
        | scalars | none | |
        | biases | none: the convs are bias-free | |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | none | |
        """
        draw_convs_and_classifier_(net, self.weights, self.cfg.standardize, self.stem_weights)


@register_scheme("learnscalar")
class LearnScalar(IdShort):
    """h(x) = alpha x, alpha learnable, init 1; c = sqrt(0.5) (Civitelli et al. sec. 3.3, item 2)."""

    def identity_shortcut(self) -> nn.Module:
        return ScaledIdentityShortcut(1.0)

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """LearnScalar: IdShort's convs and one learnable alpha per identity shortcut.

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | ``init.stem_weights``, else ``init.weights`` (he_fanout: Var 2/n_out), standardised | Civitelli et al. eq. 2, sec. 4 |
        | branch convs | the same rule | Civitelli et al. sec. 3.3, item 2 |
        | last branch conv | the same rule | Civitelli et al. sec. 3.3, item 2 |
        | shortcut convs | the same rule (transition blocks only) | Civitelli et al. footnote 1 |
        | scalars | alpha of h(x) = alpha x: 1 | Civitelli et al. sec. 3.3, item 2 |
        | biases | none: the convs are bias-free | |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | none | |
        """
        draw_convs_and_classifier_(net, self.weights, self.cfg.standardize, self.stem_weights)
        fill_((b.shortcut.alpha for b in net.blocks if isinstance(b.shortcut, ScaledIdentityShortcut)), 1.0)


@register_scheme("convshort")
class ConvShort(IdShort):
    """h(x) = W_s x, a 1x1 conv on every block, He fan-out; c = sqrt(0.5) (Civitelli et al. sec. 3.3, item 3)."""

    conv_shortcut_everywhere = True

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """ConvShort: every conv, the 1x1 shortcut of every block included, by ``init.weights``.

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | ``init.stem_weights``, else ``init.weights`` (he_fanout: Var 2/n_out), standardised | Civitelli et al. eq. 2, sec. 4 |
        | branch convs | the same rule | Civitelli et al. sec. 3.3, item 3 |
        | last branch conv | the same rule | Civitelli et al. sec. 3.3, item 3 |
        | shortcut convs | the same rule, on every block | Civitelli et al. sec. 3.3, item 3 |
        | scalars | none | |
        | biases | none: the convs are bias-free | |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | none | |
        """
        draw_convs_and_classifier_(net, self.weights, self.cfg.standardize, self.stem_weights)


@register_scheme("fixup")
class Fixup(Scheme):
    """Fixup (Zhang, Dauphin, Ma 2019), its three rules on the pre-activation block.

    Rule 1: the last conv of every branch and the classifier start at 0.  Rule 2: the
    other branch convs get He fan-out (the reference code's N(0, 2/n_out)) scaled by
    L^(-1/(2m-2)), L blocks of m convs.  Rule 3: a scalar bias before each activation,
    each conv and the linear layer, one scalar multiplier (init 1) per branch.
    ``init.reference_block=true`` builds the reference post-activation CIFAR block instead.
    """

    default_weights = "he_fanout"

    @property
    def reference(self) -> bool:
        return self.cfg.reference_block

    def norm(self, chans: int) -> nn.Module:
        return ScalarBias(0.0)

    def conv_bias(self) -> nn.Module:
        return ScalarBias(0.0)

    def gate(self) -> nn.Module:
        return ScalarGain(1.0)

    def stem(self, kind: str, in_chans: int, width: int) -> nn.Module:
        if not self.reference:
            return super().stem(kind, in_chans, width)
        # Reference stem: relu(conv(x) + bias1), then the max-pool of an ImageNet stem.
        conv, *pool = stem_layers(kind, in_chans, width, self.conv)
        return nn.Sequential(conv, ScalarBias(0.0), nn.ReLU(), *pool)

    def block(
        self, in_chans: int, width: int, stride: int, bottleneck: bool, input_var: float, preactivated: bool = False
    ) -> Block:
        if not self.reference:
            return super().block(in_chans, width, stride, bottleneck, input_var, preactivated)
        return FixupBasicBlock(in_chans, width, stride, self.conv)  # basic blocks only: models._resnet's rule

    def head(self, chans: int, num_classes: int) -> Head:
        # The classifier's bias trains as a scalar: the reference optimiser gives every parameter named
        # '*bias*' or '*scale*' a tenth of the lr (hongyi-zhang/Fixup, cifar/cifar_train.py, imagenet_train.py).
        if self.reference:  # the blocks end in a ReLU already; fc(pool(x) + bias2)
            return Head(nn.Identity(), nn.Identity(), chans, num_classes, pre_fc=ScalarBias(0.0), scalar_lr_bias=True)
        return Head(ScalarBias(0.0), self.act(), chans, num_classes, pre_fc=ScalarBias(0.0), scalar_lr_bias=True)

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """Fixup's rules 1-3, L = ``len(net.blocks)`` blocks of m = ``len(block.branch)`` convs; the convs the
        rules leave alone start as hongyi-zhang/Fixup's ``FixupResNet.__init__`` leaves them.

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | PyTorch's nn.Conv2d default, U(+-1/sqrt(n_in)) (Var 1/(3 n_in)), whatever ``init.weights``; ``init.stem_weights`` where set | hongyi-zhang/Fixup: its init loop skips conv1 (fixup_resnet_cifar.py l. 56, 66-72; fixup_resnet_imagenet.py l. 102, 115-129) |
        | branch convs | ``init.weights`` (he_fanout: N(0, 2/n_out)), standardised, x L^(-1/(2m-2)) (1/sqrt(L) basic, L^(-1/4) bottleneck) | Zhang et al. 2019, rule 2 |
        | last branch conv | 0 | Zhang et al. 2019, rule 1 |
        | shortcut convs | ``init.weights``, standardised, unscaled: the reference's N(0, 2/n_out) (reference block: option A, no conv) | fixup_resnet_imagenet.py l. 119-120, 125-126 |
        | scalars | every scalar bias 0, every branch multiplier 1 | Zhang et al. 2019, rule 3 |
        | biases | the scalar biases above; the convs are bias-free | Zhang et al. 2019, rule 3 |
        | classifier | weight 0, bias 0 | Zhang et al. 2019, rule 1; fixup_resnet_cifar.py l. 70-72 |
        | BN affine | none | |

        RNG draw order: every conv and the classifier by the unscaled rule, then the branch convs redrawn
        (the stream every seeded Fixup result before the stem rule was made with), then the stem conv
        redrawn last, so only the stem differs from those results.
        """
        draw_convs_and_classifier_(net, self.weights, self.cfg.standardize, self.stem_weights)
        depth = len(net.blocks)
        for block in net.blocks:
            m = len(block.branch)
            for conv in block.branch[:-1]:
                init_weight_(conv.weight, self.weights, self.cfg.standardize, gain=depth ** (-1.0 / (2 * m - 2)))
            block.branch[-1].weight.zero_()
        net.head.fc.weight.zero_()
        net.head.fc.bias.zero_()
        fill_((m for m in net.modules() if isinstance(m, ScalarBias)), 0.0)
        fill_((m for m in net.modules() if isinstance(m, ScalarGain)), 1.0)
        if self.cfg.stem_weights is None:  # an explicit init.stem_weights wins
            for conv in (m for m in net.stem.modules() if isinstance(m, nn.Conv2d)):
                conv.reset_parameters()


@register_scheme("skipinit")
class SkipInit(Scheme):
    """SkipInit (De & Smith 2020): y = x + g f(x), g a learnable scalar per block initialised to 0, no norm."""

    def gate(self) -> nn.Module:
        return ScalarGain(0.0)

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """SkipInit: He's convs, and a zero gate that makes every block the identity.

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | ``init.stem_weights``, else ``init.weights`` (he_fanin: Var 2/n_in), standardised | He et al. 2015; Civitelli et al. sec. 4 |
        | branch convs | the same rule | De & Smith 2020 |
        | last branch conv | the same rule | De & Smith 2020 |
        | shortcut convs | the same rule (transition blocks only) | Civitelli et al. footnote 1 |
        | scalars | the gate g of x + g f(x): 0 | De & Smith 2020 |
        | biases | none: the convs are bias-free | |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | none | |
        """
        draw_convs_and_classifier_(net, self.weights, self.cfg.standardize, self.stem_weights)
        fill_((b.gate for b in net.blocks), 0.0)


@register_scheme("rezero")
class ReZero(SkipInit):
    """ReZero (Bachlechner et al. 2020): y = x + g f(x), g = 0 after the branch's last op.

    In a ResNet this is the same block as SkipInit; the name is kept because users search for it.
    """

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """ReZero: He's convs, and a zero residual weight after the branch's last op.

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | ``init.stem_weights``, else ``init.weights`` (he_fanin: Var 2/n_in), standardised | He et al. 2015; Civitelli et al. sec. 4 |
        | branch convs | the same rule | Bachlechner et al. 2020 |
        | last branch conv | the same rule | Bachlechner et al. 2020 |
        | shortcut convs | the same rule (transition blocks only) | Civitelli et al. footnote 1 |
        | scalars | the residual weight g of x + g f(x): 0 | Bachlechner et al. 2020 |
        | biases | none: the convs are bias-free | |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | none | |
        """
        draw_convs_and_classifier_(net, self.weights, self.cfg.standardize, self.stem_weights)
        fill_((b.gate for b in net.blocks), 0.0)


@register_scheme("zero_last")
class ZeroLast(Scheme):
    """The last conv of every branch starts at 0 (improved diffusion's zero_module; Fixup's rule 1 on the
    branches), so every block starts as the identity; no scalars, nothing else changes."""

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """Fixup's rule 1 on the branches alone.

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | ``init.stem_weights``, else ``init.weights`` (he_fanin: Var 2/n_in), standardised | He et al. 2015; Civitelli et al. sec. 4 |
        | branch convs | the same rule | He et al. 2015 |
        | last branch conv | 0 (drawn first, then zeroed: the seeded RNG stream) | improved diffusion's zero_module; Zhang et al. 2019, rule 1 |
        | shortcut convs | the same rule (transition blocks only) | Civitelli et al. footnote 1 |
        | scalars | none | |
        | biases | none: the convs are bias-free | |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | none | |
        """
        draw_convs_and_classifier_(net, self.weights, self.cfg.standardize, self.stem_weights)
        for block in net.blocks:
            block.branch[-1].weight.zero_()


@register_scheme("nf")
class NormFree(Scheme):
    """NF-ResNets (Brock, De, Smith 2021a): x_{l+1} = x_l + alpha g f(x_l / beta_l).

    beta_l^2 is the expected Var(x_l): 1 at the stem, + alpha^2 per block, reset to 1
    after every transition block, whose conv shortcut sees the activated, scaled input.
    Every conv is timm's scaled weight-standardised conv (per output channel
    gain * (W - mean) / (std sqrt(n_in)), gain init 1), every ReLU is scaled by gamma, so
    the effective weights follow Brock's rule at every step; g is a scalar skip gain
    (init.skip_gain, 0 by default: every block starts as the identity).
    """

    default_weights = "brock"
    weight_rules = ("brock",)

    def __init__(self, cfg: InitConfig | None = None) -> None:
        super().__init__(cfg)
        self.alpha, self.skip_gain = float(self.cfg.alpha), float(self.cfg.skip_gain)
        if self.alpha <= 0:
            raise ConfigError(f"init.alpha={self.alpha} is not allowed: must be > 0 (Brock et al. 2021a: 0.2)")

    def conv(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
        from timm.layers import ScaledStdConv2d

        # gamma lives in the activation (as in DeepMind's code), so the stem's conv on raw pixels is unscaled.
        return ScaledStdConv2d(
            in_chans, out_chans, kernel_size, stride=stride, padding=padding, bias=False, gamma=1.0, eps=NF_STD_EPS
        )

    def act(self) -> nn.Module:
        return ScaledReLU(NF_RELU_GAMMA)

    def gate(self) -> nn.Module:
        return ScaledSkipGain(self.alpha, self.skip_gain)

    def input_scale(self, input_var: float) -> float:
        return 1.0 / math.sqrt(input_var)

    def next_input_var(self, input_var: float, block: Block) -> float:
        return (1.0 if block.transition else input_var) + self.alpha**2

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """Every conv is a ScaledStdConv2d, so the weights *computed with* follow Brock's rule at every
        step; the raw weights are standardised at the start, so the standardisation's eps stays negligible.

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | raw W ~ N(0, 1), standardised per output channel (mean 0, Var 1); gain 1 | Brock et al. 2021a; timm ScaledStdConv2d |
        | branch convs | the same; effective weight gain (W - mean) / (std sqrt(n_in)), with gamma: Var gamma^2/n_in | Brock et al. 2021a |
        | last branch conv | the same; gain 1 on nfbench's ResNets, 0 on timm's nf_resnet* (its gain_init) | Brock et al. 2021a; timm |
        | shortcut convs | the same (transition blocks only) | Brock et al. 2021a |
        | scalars | skip gain g of x + alpha g f(x / beta): ``init.skip_gain`` (0); alpha and beta are constants | Brock et al. 2021a |
        | biases | timm's conv biases 0; nfbench's convs are bias-free | timm |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | none | |
        """
        from timm.layers import ScaledStdConv2d

        for m in net.modules():
            if isinstance(m, ScaledStdConv2d):
                flat = m.weight.view(m.out_channels, -1).normal_()
                flat.sub_(flat.mean(dim=1, keepdim=True)).div_(flat.std(dim=1, keepdim=True, unbiased=False))
                m.gain.fill_(m.gain_init)
                if m.bias is not None:
                    m.bias.zero_()
        net.head.fc.reset_parameters()
        fill_((b.gate.gain for b in net.blocks if isinstance(b, ResidualBlock)), self.skip_gain)


@register_scheme("wn")
class ArpitWeightNorm(Scheme):
    """Weight normalisation with Arpit, Campos, Bengio (2019)'s initialisation.

    Every conv is w = g v / ||v|| per output channel (with a bias, init 0); v orthogonal and
    g = sqrt(gain n_in / n_out) with gain 1 for the stem and shortcuts, 2 for the branch convs
    that feed a ReLU, 1/N for a branch's last conv, N the blocks of its stage
    (victorcampos7/weightnorm-init, ``models/nets.py``: WideResNet, "proposed" init).
    The gains were derived for the reference's block, conv2(relu(conv1(x))) on the raw x; on this
    pre-activation block each branch adds about Var(x) / (2N), half of that (docs/schemes.md).
    """

    default_weights = "arpit"
    weight_rules = ()

    def conv(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
        from torch.nn.utils.parametrizations import weight_norm

        return weight_norm(nn.Conv2d(in_chans, out_chans, kernel_size, stride=stride, padding=padding), dim=0)

    @torch.no_grad()
    def initialise(self, net: ResNet) -> None:
        """Arpit et al.'s "proposed" init of w = g v / ||v||: per conv, v orthogonal and g = sqrt(gain n_in / n_out).

        | tensor | starts as | source |
        | --- | --- | --- |
        | stem conv | v orthogonal, g = sqrt(n_in / n_out) (gain 1) | Arpit et al. 2019; victorcampos7/weightnorm-init |
        | branch convs | v orthogonal, g = sqrt(2 n_in / n_out) (gain 2: they feed a ReLU) | Arpit et al. 2019 |
        | last branch conv | v orthogonal, g = sqrt(n_in / (N n_out)), N the blocks of its stage | Arpit et al. 2019 |
        | shortcut convs | v orthogonal, g = sqrt(n_in / n_out) (gain 1; transition blocks only) | Arpit et al. 2019 |
        | scalars | none | |
        | biases | every conv's bias 0 | Arpit et al. 2019 |
        | classifier | PyTorch's nn.Linear default, W and b ~ U(+-1/sqrt(n_in)) | torchvision's ResNets |
        | BN affine | none | |
        """
        gains = {m: 1.0 for m in net.modules() if isinstance(m, nn.Conv2d)}
        for stage in split_stages(net.blocks):
            for block in stage:
                for conv in block.branch[:-1]:
                    gains[conv] = 2.0
                gains[block.branch[-1]] = 1.0 / len(stage)
        for conv, gain in gains.items():
            g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
            nn.init.orthogonal_(v)
            n_in, n_out = fans(v)
            g.fill_(math.sqrt(gain * n_in / n_out))
            conv.bias.zero_()
        net.head.fc.reset_parameters()


def weight_rule(name: str, weights: Optional[str]) -> str:
    """The weight rule a run of ``init=name`` applies: ``init.weights``, else the scheme's default
    (docs/science.md#scheme-defaults).  ConfigError for a scheme this version does not know."""
    return str(weights) if weights else SCHEMES.get(name).default_weights


def build_scheme(cfg: InitConfig) -> Scheme:
    """The configured scheme; its name is checked against the registry, its init.* values by its class."""
    return SCHEMES.get(cfg.name)(cfg)
