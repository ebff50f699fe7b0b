"""The model zoo (docs/science.md#architectures): published parameter counts, structure, stems, and every
(model, init) pair."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torch.nn import functional as F

from nfbench.config import Config, ModelConfig, OptimConfig, option_config
from nfbench.engine.optim import build_optimizer
from nfbench.engine.validation import validate
from nfbench.errors import ConfigError
from nfbench.models import (
    HE_CIFAR_MODELS,
    MODELS,
    TIMM_NF_MODELS,
    ConvShortcut,
    FixupBasicBlock,
    IdentityShortcut,
    PostActivationBasicBlock,
    ResidualBlock,
    TimmNFBlock,
    ZeroPadShortcut,
    build_model,
    construct_model,
)
from nfbench.models.nf_resnet import timm_nf_resnet
from nfbench.schemes import SCHEMES, build_scheme

SMALL_WRN = {"depth": 10, "widen": 2}


def model_cfg(name: str, **kw) -> ModelConfig:
    return option_config("model", name, **({**SMALL_WRN, **kw} if name == "wrn" else kw))


def build(
    name: str,
    init: str,
    width: int | None = 4,
    image_size: int = 16,
    in_chans: int = 3,
    num_classes: int = 10,
    stem: str = "auto",
    **init_kw,
) -> nn.Module:
    scheme = build_scheme(option_config("init", init, **init_kw))
    return build_model(model_cfg(name, width=width, stem=stem), scheme, num_classes, in_chans, image_size)


def n_params(name: str, init: str, num_classes: int = 10, image_size: int = 32, **kw) -> int:
    """Parameters of the full-width model, built on the meta device (nothing allocated)."""
    init_kw = {k: kw.pop(k) for k in ("reference_block",) if k in kw}
    with torch.device("meta"):
        net = construct_model(
            model_cfg(name, **kw), build_scheme(option_config("init", init, **init_kw)), num_classes, 3, image_size
        )
    return sum(p.numel() for p in net.parameters())


# --- published parameter counts ------------------------------------------------------------

# Civitelli et al., Table 1 (ResNet-50/101) and Table 2 (ResNet-18): CIFAR stem, 10 classes, 32x32x3.
CIVITELLI_PARAMS_M = {
    ("resnet18", "idshort"): 11.16,
    ("resnet18", "learnscalar"): 11.16,
    ("resnet18", "convshort"): 11.52,
    ("resnet50", "idshort"): 23.47,
    ("resnet50", "learnscalar"): 23.47,
    ("resnet50", "convshort"): 38.02,
    ("resnet101", "idshort"): 42.41,
    ("resnet101", "learnscalar"): 42.41,
    ("resnet101", "convshort"): 74.78,
}


@pytest.mark.parametrize("model,init", list(CIVITELLI_PARAMS_M))
def test_civitelli_tables_1_2_parameter_counts(model, init):
    assert round(n_params(model, init) / 1e6, 2) == CIVITELLI_PARAMS_M[(model, init)]


def test_convshort_adds_exactly_a_1x1_conv_to_every_identity_block():
    # Hand count for ResNet-18: the identity blocks are the first block of stage 1 and the second of
    # every stage; ConvShort gives each a c x c 1x1 conv (c = 64, 64, 128, 256, 512).
    extra = 64 * 64 + sum(c * c for c in (64, 128, 256, 512))
    assert n_params("resnet18", "convshort") - n_params("resnet18", "idshort") == extra


# He et al. 2016a, Table 6 (CIFAR-10 ResNets with the option-A shortcut): 0.27, 0.46, 0.66, 0.85, 1.7 M.
HE_CIFAR_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


@pytest.mark.parametrize("depth", list(HE_CIFAR_PARAMS_M))
def test_fixup_reference_cifar_resnets_match_he_et_al_table_6(depth):
    params = n_params(f"resnet{depth}", "fixup", reference_block=True)
    digits = 1 if depth == 110 else 2
    assert round(params / 1e6, digits) == HE_CIFAR_PARAMS_M[depth]
    # And exactly hongyi-zhang/Fixup's fixup_resnet<depth>: its convs (3x3 stem, 2n+2n+2n 3x3 convs,
    # no shortcut parameters), five scalars per block, bias1 and bias2, and the 64 -> 10 classifier.
    n = (depth - 2) // 6
    convs = 3 * 16 * 9 + sum(
        ci * co * 9 + co * co * 9 + (n - 1) * 2 * co * co * 9 for ci, co in ((16, 16), (16, 32), (32, 64))
    )
    assert params == convs + 5 * 3 * n + 2 + 64 * 10 + 10


def he_table6_params(depth: int) -> int:
    """He et al. 2016a's CIFAR ResNet-depth counted by hand: the stem's 3x3 conv (3 -> 16) and BN, per block two
    bias-free 3x3 convs (9 c_in c_out each) and two BNs (2 c each), option-A shortcuts without parameters, then
    the 64 -> 10 linear layer with its bias."""
    n = (depth - 2) // 6
    params, chans = 9 * 3 * 16 + 2 * 16, 16
    for width in (16, 32, 64):
        for _ in range(n):
            params += 9 * chans * width + 2 * width + 9 * width * width + 2 * width
            chans = width
    return params + 64 * 10 + 10


@pytest.mark.parametrize("depth", list(HE_CIFAR_PARAMS_M))
def test_he_resnets_match_he_et_al_table_6(depth):
    """He et al. 2016a's own network (model=he_resnet<depth>, init=bn): Table 6's count at its rounding, and
    exactly the hand count; ResNet-20 is the 269,722 of the well-known public re-implementations
    (docs/science.md#he-cifar-resnet)."""
    params = n_params(f"he_resnet{depth}", "bn")
    assert round(params / 1e6, 1 if depth == 110 else 2) == HE_CIFAR_PARAMS_M[depth]
    assert params == he_table6_params(depth)
    if depth == 20:
        assert params == 269_722


# Zagoruyko & Komodakis 2016 (Wide ResNets), CIFAR results: WRN-40-4 8.9 M, WRN-16-8 11.0 M, WRN-28-10 36.5 M
# (their networks have BatchNorm, so init=bn).
@pytest.mark.parametrize("depth,widen,millions", [(40, 4, 8.9), (16, 8, 11.0), (28, 10, 36.5)])
def test_wide_resnet_parameter_counts(depth, widen, millions):
    assert round(n_params("wrn", "bn", depth=depth, widen=widen) / 1e6, 1) == millions


def test_timm_nf_resnet_is_timm_model_restructured():
    """Same parameters and the same function as timm's own nf_resnet26 built from the same seed."""
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    ours = timm_nf_resnet("nf_resnet26", 10, 3, width_factor=0.125)
    torch.manual_seed(0)
    ref = timm.create_model("nf_resnet26", pretrained=False, num_classes=10, width_factor=0.125)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert len(ours.blocks) == sum(len(s) for s in ref.stages) == 8
    assert torch.equal(ours(x), ref(x))
    assert isinstance(ours.head.fc, nn.Linear) and ours.head.fc.out_features == 10


# --- structure -------------------------------------------------------------------------------


def stage_widths(net: nn.Module) -> list[int]:
    widths: list[int] = []
    for block in net.blocks:
        if block.transition or not widths:
            widths.append(block.out_chans)
    return widths


@pytest.mark.parametrize(
    "name,blocks,widths,kernels",
    [
        ("resnet18", 8, [64, 128, 256, 512], [3, 3]),
        ("resnet34", 16, [64, 128, 256, 512], [3, 3]),
        ("resnet50", 16, [256, 512, 1024, 2048], [1, 3, 1]),
        ("resnet101", 33, [256, 512, 1024, 2048], [1, 3, 1]),
        ("resnet152", 50, [256, 512, 1024, 2048], [1, 3, 1]),
        ("resnet20", 9, [16, 32, 64], [3, 3]),
        ("resnet110", 54, [16, 32, 64], [3, 3]),
    ],
)
def test_published_architectures(name, blocks, widths, kernels):
    with torch.device("meta"):
        net = construct_model(option_config("model", name), build_scheme(option_config("init", "idshort")), 10, 3, 32)
    assert len(net.blocks) == blocks
    assert stage_widths(net) == widths
    for block in net.blocks:
        assert [c.kernel_size[0] for c in block.branch] == kernels
        # The stride sits in the 3x3 conv; a conv shortcut exactly where the block changes shape.
        assert [c.stride[0] for c in block.branch if c.kernel_size[0] == 3][0] == block.stride
        assert isinstance(block.shortcut, ConvShortcut) == block.transition
    assert [b.stride for b in net.blocks if b.stride == 2] == [2] * (len(widths) - 1)
    assert net.stem[0].out_channels == (16 if name in ("resnet20", "resnet110") else 64)


def test_wide_resnet_structure():
    """WRN-d-k: three stages of (d - 4) / 6 basic blocks, 16k-32k-64k channels after a 16-channel stem."""
    with torch.device("meta"):
        net = construct_model(
            option_config("model", "wrn", depth=16, widen=4), build_scheme(option_config("init", "plain")), 10, 3, 32
        )
    assert net.stem[0].out_channels == 16 and len(net.blocks) == 6
    assert stage_widths(net) == [64, 128, 256]
    assert [b.stride for b in net.blocks] == [1, 1, 2, 1, 2, 1]


def test_width_multiplier_scales_every_stage():
    net = build("resnet18", "idshort", width=8)
    assert net.stem[0].out_channels == 8 and stage_widths(net) == [8, 16, 32, 64]
    wide = build("wrn", "idshort", width=4)
    assert wide.stem[0].out_channels == 4 and stage_widths(wide) == [8, 16, 32]


@pytest.mark.parametrize(
    "image_size,stem,kind",
    [(32, "auto", "cifar"), (224, "auto", "imagenet"), (224, "cifar", "cifar"), (32, "imagenet", "imagenet")],
)
def test_stem_follows_the_image_size_unless_overridden(image_size, stem, kind):
    net = build("resnet18", "idshort", image_size=image_size, stem=stem)
    conv = net.stem[0]
    if kind == "cifar":
        assert (conv.kernel_size, conv.stride, len(net.stem)) == ((3, 3), (1, 1), 1)
    else:
        assert (conv.kernel_size, conv.stride) == ((7, 7), (2, 2)) and isinstance(net.stem[1], nn.MaxPool2d)
    out = net.stem(torch.zeros(1, 3, image_size, image_size))
    assert out.shape[-1] == (image_size if kind == "cifar" else image_size // 4)


@pytest.mark.parametrize(
    "init,stem,layers",
    [
        # He et al. 2016b's ImageNet pre-activation ResNet (fb.resnet.torch preresnet.lua) and torchvision normalise
        # and activate the stem conv before the max-pool; the CIFAR stem is the bare conv (the first block's BN
        # follows).
        ("bn", "imagenet", [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]),
        ("bn", "cifar", [nn.Conv2d]),
        # The normalization-free schemes keep the bare conv -> max-pool stem.
        ("idshort", "imagenet", [nn.Conv2d, nn.MaxPool2d]),
        ("plain", "imagenet", [nn.Conv2d, nn.MaxPool2d]),
    ],
)
def test_bn_imagenet_stem_is_conv_bn_relu_maxpool(init, stem, layers):
    net = build("resnet18", init, image_size=64, stem=stem)
    assert [type(m) for m in net.stem] == layers
    assert net.stem(torch.zeros(1, 3, 64, 64)).shape == ((1, 4, 16, 16) if stem == "imagenet" else (1, 4, 64, 64))


def fb_preresnet_imagenet_params(depths: tuple[int, ...], bottleneck: bool, num_classes: int = 1000) -> int:
    """Parameters of fb.resnet.torch's ImageNet pre-activation ResNet (facebookarchive/fb.resnet.torch
    ``models/preresnet.lua``, commit 7ac4a9f), counted from its layers, independently of nfbench:
    stem conv(3 -> 64, 7x7) + BN(64); per block a pre-activation BN(in) except the stage-1 first block
    ('no_preact': its input is the stem's BN-ReLU'd output), the branch convs with a BN after each but the
    last, a bias-free 1x1 conv shortcut (type B) where the width changes; BN(final) and the classifier.
    Its convs have no bias (cudnn >= 4)."""
    params, chans = 3 * 64 * 49 + 2 * 64, 64
    for stage, depth in enumerate(depths):
        w = 64 * 2**stage
        out = 4 * w if bottleneck else w
        for i in range(depth):
            preact_bn = 0 if stage == 0 and i == 0 else 2 * chans
            if bottleneck:
                convs, inner_bns = chans * w + 9 * w * w + w * out, 2 * (2 * w)
            else:
                convs, inner_bns = 9 * chans * w + 9 * w * w, 2 * w
            shortcut = chans * out if chans != out else 0
            params += preact_bn + convs + inner_bns + shortcut
            chans = out
    return params + 2 * chans + chans * num_classes + num_classes


@pytest.mark.parametrize(
    "name,depths,bottleneck", [("resnet50", (3, 4, 6, 3), True), ("resnet18", (2, 2, 2, 2), False)]
)
def test_bn_imagenet_resnet_has_fb_preresnet_parameter_count(name, depths, bottleneck):
    # ResNet-50: 25,549,352, i.e. 7,680 fewer than torchvision's post-activation resnet50 (25,557,032).
    expected = fb_preresnet_imagenet_params(depths, bottleneck)
    assert n_params(name, "bn", num_classes=1000, image_size=224) == expected
    if name == "resnet50":
        assert expected == 25_549_352


def bn_and_conv_calls(net: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """The BatchNorm and conv layers in the order a forward pass applies them."""
    calls: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: calls.append(m))
        for m in net.modules()
        if isinstance(m, (nn.BatchNorm2d, nn.Conv2d))
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_bn_first_block_input_is_normalised_exactly_once(model, stem):
    """fb.resnet.torch preresnet.lua: after the ImageNet stem's conv -> BN -> ReLU -> max-pool, the first block is
    'no_preact' (no BN-ReLU of its own; branch and shortcut see the pooled stem output); the CIFAR stem is the
    bare conv, so the first block's own BN-ReLU stays.  Either way one BN before the first block's first conv."""
    net = build(model, "bn", image_size=64, stem=stem)
    calls = bn_and_conv_calls(net, torch.randn(2, 3, 64, 64))
    first = net.blocks[0]
    bns_before = [m for m in calls[: calls.index(first.branch[0])] if isinstance(m, nn.BatchNorm2d)]
    assert len(bns_before) == 1
    assert (bns_before[0] in set(net.stem.modules())) == (stem == "imagenet")
    # Every later block keeps its own pre-activation BN before its first conv.
    for prev, block in zip(net.blocks, net.blocks[1:]):
        between = calls[calls.index(prev.branch[-1]) + 1 : calls.index(block.branch[0])]
        assert sum(isinstance(m, nn.BatchNorm2d) for m in between) == 1
    # The first block's shortcut sees the same tensor as its first conv (a ResNet-50's 1x1 conv, an identity else).
    x = net.stem(torch.randn(2, 3, 64, 64))
    seen = {}
    hook = first.branch[0].register_forward_hook(lambda m, i, o: seen.setdefault("a", i[0]))
    with torch.no_grad():
        y = first(x)
    hook.remove()
    if stem == "imagenet":
        assert torch.equal(seen["a"], x)
        assert torch.equal(first.skip(x), first.shortcut(x))
    else:
        assert not torch.equal(seen["a"], x)
    assert y.shape[1] == first.out_chans


def test_fixup_reference_block_is_post_activation_with_option_a_shortcut():
    net = build("resnet20", "fixup", reference_block=True)
    assert all(isinstance(b, FixupBasicBlock) for b in net.blocks)
    transitions = [b for b in net.blocks if b.transition]
    assert len(transitions) == 2 and all(isinstance(b.shortcut, ZeroPadShortcut) for b in transitions)
    # Option A: subsample by 2, then zero channels appended.
    x = torch.randn(2, 4, 8, 8)
    h = transitions[0].skip(x)
    assert h.shape == (2, 8, 4, 4)
    assert torch.equal(h[:, :4], x[:, :, ::2, ::2]) and not h[:, 4:].any()
    # Post-activation: every block output (after the final ReLU) is non-negative.
    net.blocks[0].branch[1].weight.data.normal_()
    assert (net.blocks[0](torch.randn(2, 4, 16, 16)) >= 0).all()


def test_he_resnet_structure_and_option_a_shortcuts():
    """He et al. 2016a section 4.2: a 3x3 conv -> BN -> ReLU stem to 16 channels, three stages of n blocks at
    16-32-64, each block two 3x3 convs with BN after each; where the shape changes an option-A shortcut
    (stride-2 subsampling, zero channels appended, no parameters), elsewhere the identity; pool -> linear."""
    with torch.device("meta"):
        net = construct_model(
            option_config("model", "he_resnet56"), build_scheme(option_config("init", "bn")), 10, 3, 32
        )
    assert [type(m) for m in net.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert (net.stem[0].in_channels, net.stem[0].out_channels, net.stem[0].kernel_size) == (3, 16, (3, 3))
    assert len(net.blocks) == 27 and stage_widths(net) == [16, 32, 64]
    assert all(isinstance(b, PostActivationBasicBlock) for b in net.blocks)
    for block in net.blocks:
        assert [c.kernel_size for c in block.branch] == [(3, 3), (3, 3)]
        assert [c.stride[0] for c in block.branch] == [block.stride, 1]
        assert all(c.bias is None for c in block.branch)
        assert isinstance(block.shortcut, ZeroPadShortcut if block.transition else IdentityShortcut)
        assert not list(block.shortcut.parameters())
    assert [i for i, b in enumerate(net.blocks) if b.transition] == [9, 18]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 27  # no conv outside the stem and the branches
    assert isinstance(net.head.norm, nn.Identity) and isinstance(net.head.act, nn.Identity)
    assert (net.head.fc.in_features, net.head.fc.out_features, net.head.fc.bias is not None) == (64, 10, True)
    # Option A on real tensors: subsample by 2, then zero channels appended.
    block = build("he_resnet20", "bn").blocks[3]  # width 4: 4 -> 8 channels, stride 2
    x = torch.randn(2, 4, 8, 8)
    h = block.skip(x)
    assert h.shape == (2, 8, 4, 4) and torch.equal(h[:, :4], x[:, :, ::2, ::2]) and not h[:, 4:].any()


def _bn_by_hand(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Eval-mode BatchNorm from its tensors: (x - running mean) / sqrt(running var + eps) * gamma + beta."""
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


@pytest.mark.parametrize("index", [1, 3])  # an identity block and the first block of stage 2
def test_he_resnet_block_is_post_activation(index):
    """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)) computed from the block's tensors, BN in eval mode
    with statistics and affines drawn at random so that no term can hide."""
    torch.manual_seed(0)
    net = build("he_resnet20", "bn", width=4)
    block = net.blocks[index]
    with torch.no_grad():
        for bn in block.norms:
            bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    block.eval()
    chans = block.in_chans
    x = torch.randn(2, chans, 8, 8)
    conv1, conv2 = block.branch
    out = F.relu(_bn_by_hand(F.conv2d(x, conv1.weight, stride=block.stride, padding=1), block.norms[0]))
    out = _bn_by_hand(F.conv2d(out, conv2.weight, padding=1), block.norms[1])
    shortcut = x if block.stride == 1 else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, chans))
    expected = F.relu(out + shortcut)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(block.skip(x), shortcut, rtol=0, atol=0)
    assert (expected == 0).any() and (expected > 0).any()  # the final ReLU acted


def test_he_resnet_trains_a_step_and_seeded_builds_are_identical():
    """Full width at 32x32: forward, backward and one SGD step of He et al.'s recipe (lr 0.1, momentum 0.9,
    wd 1e-4); the same seed builds the same network, another seed another one."""

    def seeded(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return build("he_resnet20", "bn", width=None, image_size=32)

    net = seeded(0)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), seeded(0).state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), seeded(1).state_dict().values()))
    opt = build_optimizer(net, OptimConfig(lr=0.1, momentum=0.9, weight_decay=1e-4), torch.device("cpu"))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(10, (8,))
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any() for p in net.parameters())
    before = [p.detach().clone() for p in net.parameters()]
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize(
    "overrides,message",
    [
        *[
            (
                [f"init={s}"],
                f"model=he_resnet20 is He et al. 2016a's BatchNorm network.*use init=bn with it, or the "
                f"pre-activation model=resnet20 with init={s}",
            )
            for s in SCHEMES.names()
            if s != "bn"
        ],
        (
            ["init=bn_conv_shortcut"],
            "init.conv_shortcut=true.*use init=bn without init.conv_shortcut, or model=resnet20",
        ),
        (["init=bn", "model.stem=imagenet"], "model.stem=imagenet is not available for model=he_resnet20.*CIFAR stem"),
    ],
)
def test_he_resnet_needs_init_bn_and_the_cifar_stem(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message) as refusal:
        validate(make_cfg(["model=he_resnet20", *overrides]))
    assert "\n" not in str(refusal.value)


@pytest.mark.parametrize("stem", ["auto", "cifar"])
def test_he_resnet_width_scales_every_stage(stem):
    net = build("he_resnet32", "bn", width=8, stem=stem, image_size=32)
    assert net.stem[0].out_channels == 8 and stage_widths(net) == [8, 16, 32] and len(net.blocks) == 15


# --- every registered (model, init) pair -------------------------------------------------------

# Every registered scheme, and the one scheme option that builds other blocks (Fixup's reference block).
SCHEME_VARIANTS = [(s, {}) for s in SCHEMES.names()] + [("fixup", {"reference_block": True})]
# Past this many residual blocks a model's row of the grid is marked slow (resnet44/56/101/110/152, nf_resnet101).
FAST_MAX_BLOCKS = 16


def buildable_scheme(model: str) -> str:
    """A scheme that builds ``model``: nf for timm's NF-ResNets, bn for He et al.'s network, plain elsewhere."""
    return "nf" if model in TIMM_NF_MODELS else "bn" if model in HE_CIFAR_MODELS else "plain"


def grid_cfg(model: str, init: str, init_kw: dict) -> Config:
    width = 8 if model in TIMM_NF_MODELS else 4
    return Config(model=model_cfg(model, width=width), init=option_config("init", init, **init_kw))


def n_blocks(model: str) -> int:
    with torch.device("meta"):
        scheme = buildable_scheme(model)
        return len(
            construct_model(
                grid_cfg(model, scheme, {}).model, build_scheme(option_config("init", scheme)), 10, 3, 8
            ).blocks
        )


def grid() -> list:
    sizes = {m: n_blocks(m) for m in MODELS.names()}
    return [
        pytest.param(
            m,
            s,
            kw,
            id=f"{m}-{s}{'+reference' if kw else ''}",
            marks=[pytest.mark.slow] if sizes[m] > FAST_MAX_BLOCKS else [],
        )
        for m in MODELS.names()
        for s, kw in SCHEME_VARIANTS
    ]


def refused(model: str, init: str, init_kw: dict) -> bool:
    """The pairs that cannot be built, by docs/science.md#invalid-pairs: timm's NF-ResNets are the nf scheme's blocks,
    He et al. 2016a's network is a BatchNorm network (init=bn only), and Fixup's reference block is a basic
    block (a bottleneck branch has 3 convs)."""
    if model in TIMM_NF_MODELS:
        return init != "nf"
    if model in HE_CIFAR_MODELS:
        return init != "bn"
    with torch.device("meta"):
        plain = build_scheme(option_config("init", "plain"))
        bottleneck = len(construct_model(grid_cfg(model, "plain", {}).model, plain, 10, 3, 8).blocks[0].branch) == 3
    return init_kw.get("reference_block", False) and bottleneck


@pytest.mark.parametrize("model,init,init_kw", grid())
def test_every_registered_pair_trains_and_round_trips_a_checkpoint_or_is_refused(model, init, init_kw, tmp_path):
    """timm's test_models over list_models(): every model x scheme that validation accepts builds, runs
    forward and backward, takes an SGD step and comes back identical from last.pt and model.safetensors;
    every pair it refuses is refused with a one-line ConfigError, and by building too."""
    from safetensors.torch import load_model

    from nfbench import rundir

    cfg = grid_cfg(model, init, init_kw)
    if refused(model, init, init_kw):
        with pytest.raises(ConfigError) as refusal:
            validate(cfg)
        assert str(refusal.value).strip() and "\n" not in str(refusal.value)
        with pytest.raises(ConfigError):
            build_model(cfg.model, build_scheme(cfg.init), 10, 3, 8)
        return
    validate(cfg)
    torch.manual_seed(0)
    net = build_model(cfg.model, build_scheme(cfg.init), 10, 3, 8)
    opt = build_optimizer(net, OptimConfig(lr=1e-3, weight_decay=1e-4), torch.device("cpu"))
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    before = [p.detach().clone() for p in net.parameters()]
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    with torch.no_grad():  # in training mode, as a checkpoint is taken (it moves BatchNorm's running statistics)
        out = net(x)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    rundir.save_checkpoint(tmp_path / rundir.LAST, {"model": net.state_dict(), "epoch": 1})
    rundir.save_weights(tmp_path / rundir.WEIGHTS, net.state_dict(), {"epoch": 1}, {})
    for load in (
        lambda m: m.load_state_dict(rundir.load_checkpoint(tmp_path / rundir.LAST)["model"]),
        lambda m: load_model(m, tmp_path / rundir.WEIGHTS, strict=True),
    ):
        torch.manual_seed(1)
        fresh = construct_model(cfg.model, build_scheme(cfg.init), 10, 3, 8)
        load(fresh)
        got = fresh.state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
        with torch.no_grad():  # NaN where the step diverged (plain ResNet-152's variance explodes): NaN alike
            torch.testing.assert_close(fresh(x), out, rtol=0, atol=0, equal_nan=True)


def test_blocks_expose_branch_shortcut_and_scalars_for_every_block_type():
    for net in (
        build("resnet20", "learnscalar"),
        build("resnet20", "fixup", reference_block=True),
        build("nf_resnet26", "nf", width=8),
        build("he_resnet20", "bn"),
    ):
        for block in net.blocks:
            assert isinstance(block, (ResidualBlock, FixupBasicBlock, TimmNFBlock, PostActivationBasicBlock))
            assert all(isinstance(c, nn.Conv2d) for c in block.branch) and len(block.branch) >= 2
            assert block.shortcut is not None and block.stride in (1, 2)
    assert [len(b.scalars()) for b in build("resnet20", "learnscalar").blocks] == [1, 1, 1, 0, 1, 1, 0, 1, 1]


@pytest.mark.parametrize("init", [s for s in SCHEMES.names() if s != "nf"])
def test_timm_nf_resnets_need_init_nf(make_cfg, init):
    cfg = make_cfg([f"model={TIMM_NF_MODELS[1]}", f"init={init}"])
    with pytest.raises(ConfigError, match="model=nf_resnet50 is timm's NF-ResNet.*use init=nf"):
        validate(cfg)
    with pytest.raises(ConfigError, match="use init=nf"):
        build("nf_resnet50", init)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=resnet50", "init=fixup", "init.reference_block=true"], "model=resnet50 has no basic blocks"),
        (["model=resnet50", "init=fixup_reference"], "model=resnet50 has no basic blocks"),
        (["model=wrn", "model.depth=12"], "model.depth=12 is not allowed: must be 6n \\+ 4"),
        (["model=wrn", "model.widen=0"], "model.widen=0 is not allowed: must be >= 1"),
        (["init=nf", "init.alpha=0"], "init.alpha=0.0 is not allowed: must be > 0"),
        (
            ["init=nf", "init.weights=he_fanout"],
            "init.weights='he_fanout' is not allowed with init=nf: choose one of brock",
        ),
        (
            ["init=wn", "init.weights=brock"],
            "init.weights='brock' is not allowed with init=wn: init=wn sets every weight",
        ),
        (["model=nf_resnet26", "init=nf", "model.stem=cifar"], "ImageNet stem only"),
        (["model=nf_resnet26", "init=nf", "init.skip_gain=1"], "init.skip_gain applies to nfbench's own ResNets"),
    ],
)
def test_invalid_model_init_combinations_name_the_key(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(overrides))


@pytest.mark.parametrize(
    "overrides,key,owner",
    [
        (["init=idshort", "init.reference_block=true"], "init.reference_block", "FixupInitConfig"),
        (["init=bn", "init.alpha=0.2"], "init.alpha", "NFInitConfig"),
        (["init=fixup", "init.skip_gain=1"], "init.skip_gain", "NFInitConfig"),
        (["model=resnet18", "model.depth=28"], "model.depth", "WideResNetConfig"),
        (["model=nf_resnet26", "init=nf", "model.widen=2"], "model.widen", "WideResNetConfig"),
    ],
)
def test_a_key_of_another_option_is_an_unknown_key_to_hydra(make_cfg, overrides, key, owner):
    """Option-specific keys live in their option's schema: under any other option Hydra itself refuses
    them at composition, as it does any unknown key; the option that has the key accepts it."""
    from hydra.errors import ConfigCompositionException

    from nfbench.config import OPTION_SCHEMAS

    with pytest.raises(ConfigCompositionException) as e:
        make_cfg(overrides)
    assert f"Key '{key.split('.')[1]}' not in" in str(e.value.__cause__), e.value.__cause__
    group = key.split(".")[0]
    [option] = [o for o, schema in OPTION_SCHEMAS[group].items() if schema.__name__ == owner]
    others = [o for o in overrides if not o.startswith((f"{group}=", key))]
    assert key.split(".")[1] in make_cfg([*others, f"{group}={option}", overrides[-1]])[group]


def test_every_registered_model_has_a_config_file(make_cfg):
    from pathlib import Path

    from omegaconf import OmegaConf

    from nfbench.cli.main import CONF_DIR

    assert sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml")) == MODELS.names()
    # Every scheme has its file; a variant file (fixup_reference, bn_conv_shortcut) is a registered scheme
    # with one of that scheme's own keys set.
    init_files = {p.stem: OmegaConf.load(p).get("name") for p in (Path(CONF_DIR) / "init").glob("*.yaml")}
    assert set(SCHEMES.names()) <= set(init_files)
    variants = {stem: name for stem, name in init_files.items() if stem not in SCHEMES.names()}
    assert variants == {"fixup_reference": "fixup", "bn_conv_shortcut": "bn"}
    assert make_cfg(["init=fixup_reference"]).init.reference_block
    assert make_cfg(["init=bn_conv_shortcut"]).init.conv_shortcut
