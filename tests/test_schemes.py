"""The init= schemes (docs/science.md#schemes): the statistics of every initialised tensor, identity at
initialisation, batch independence and the optimiser's treatment of their scalars."""

from __future__ import annotations

import math

import pytest
import torch
from timm.layers import ScaledStdConv2d
from torch import nn
from torch.nn import functional as F

from nfbench.config import OptimConfig, option_config
from nfbench.engine.optim import param_groups
from nfbench.models import ConvShortcut, ScalarBias, ScalarGain, build_model
from nfbench.models.resnet import Scalar
from nfbench.schemes import SCHEMES, build_scheme

RULES = ("he_fanin", "he_fanout", "brock")
# Brock et al. 2021a / Civitelli et al. eq. 3: gamma^2 = 2 / (1 - 1/pi) for ReLU.
BROCK_GAMMA2 = 2.0 / (1.0 - 1.0 / math.pi)
# The NF-ResNets' ReLU gamma as DeepMind's code (and timm's _nonlin_gamma['relu']) has it.
NF_GAMMA = 1.7139588594436646


def build(model: str, init: str, width: int = 4, image_size: int = 16, **init_kw) -> nn.Module:
    wrn = {"depth": 10, "widen": 2} if model == "wrn" else {}
    scheme = build_scheme(option_config("init", init, **init_kw))
    return build_model(option_config("model", model, width=width, **wrn), scheme, 10, 3, image_size)


def fan(w: torch.Tensor) -> tuple[int, int]:
    rf = w[0, 0].numel()
    return w.shape[1] * rf, w.shape[0] * rf


def assert_rule(w: torch.Tensor, rule: str, scale: float = 1.0) -> None:
    """Exactly the rule's moments (Civitelli et al. sec. 4: standardised after sampling), times ``scale``."""
    n_in, n_out = fan(w)
    w = w.detach().double()
    if rule == "brock":  # per output channel
        target = scale**2 * BROCK_GAMMA2 / n_in
        flat = w.reshape(w.shape[0], -1)
        mean, var = flat.mean(1), flat.var(1, unbiased=False)
    else:
        target = scale**2 * 2.0 / (n_in if rule == "he_fanin" else n_out)
        mean, var = w.mean(), w.var(unbiased=False)
    assert (mean.abs() <= 1e-5 * math.sqrt(target)).all(), mean
    torch.testing.assert_close(var, torch.full_like(var, target), rtol=1e-5, atol=0)


def convs_by_role(net: nn.Module) -> tuple[list[nn.Conv2d], list[nn.Conv2d], list[nn.Conv2d]]:
    """(stem and shortcut convs, branch convs but the last, last branch convs)."""
    last = [b.branch[-1] for b in net.blocks]
    inner = [c for b in net.blocks for c in b.branch[:-1]]
    branch = {id(c) for c in last + inner}
    other = [m for m in net.modules() if isinstance(m, nn.Conv2d) and id(m) not in branch]
    return other, inner, last


# --- statistics of the initialised tensors ------------------------------------------------------

PLAIN_RULE_SCHEMES = ("bn", "plain", "idshort", "learnscalar", "convshort", "skipinit", "rezero")


# He et al. 2016a's network (BatchNorm built in) is started by init=bn's initialise, unchanged.
@pytest.mark.parametrize(
    "init,model", [(i, m) for m in ("resnet20", "resnet50") for i in PLAIN_RULE_SCHEMES] + [("bn", "he_resnet20")]
)
@pytest.mark.parametrize("rule", RULES)
def test_every_conv_follows_the_weight_rule_exactly(init, rule, model):
    net = build(model, init, weights=rule)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + sum(len(b.branch) + isinstance(b.shortcut, ConvShortcut) for b in net.blocks)
    for conv in convs:
        assert_rule(conv.weight, rule)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()
    # LearnScalar's alpha starts at 1 (Civitelli et al. 3.3), SkipInit's and ReZero's gate at 0.
    expected = {"learnscalar": 1.0, "skipinit": 0.0, "rezero": 0.0}.get(init)
    assert all(s.weight.item() == expected for b in net.blocks for s in b.scalars())


def test_scheme_default_weight_rules_follow_spec():
    defaults = {name: build_scheme(option_config("init", name)).weights for name in SCHEMES.names()}
    # docs/science.md#scheme-defaults; Fixup's reference code draws N(0, 2/n_out); NF's standardised convs are Brock's.
    assert defaults == {
        "bn": "he_fanin",
        "plain": "he_fanin",
        "idshort": "he_fanout",
        "learnscalar": "he_fanout",
        "convshort": "he_fanout",
        "fixup": "he_fanout",
        "skipinit": "he_fanin",
        "rezero": "he_fanin",
        "zero_last": "he_fanin",
        "nf": "brock",
        "wn": "arpit",
    }


# --- every tensor starts as its scheme's table says ------------------------------------------------

TABLE_ROWS = (
    "stem conv",
    "branch convs",
    "last branch conv",
    "shortcut convs",
    "scalars",
    "biases",
    "classifier",
    "BN affine",
)


@pytest.mark.parametrize("name", SCHEMES.names())
def test_every_scheme_states_its_init_in_one_function_with_a_table(name):
    """nanochat's init_weights habit: one function per scheme, no super() chain, a row for every kind of tensor."""
    import inspect

    cls = SCHEMES.get(name)
    assert "initialise" in vars(cls), f"init={name} inherits its initialisation"
    source = inspect.getsource(vars(cls)["initialise"])
    assert "super()" not in source
    doc = inspect.getdoc(vars(cls)["initialise"]) or ""
    rows = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("|")}
    assert set(TABLE_ROWS) <= rows, f"init={name}'s table lacks {set(TABLE_ROWS) - rows}"


def rule(weights: str, scale: float = 1.0):
    return lambda conv, n: assert_rule(conv.weight, weights, scale)


def zero(conv: nn.Module, n: int) -> None:
    assert not conv.weight.any()


def nf_standardised(conv: nn.Module, n: int) -> None:
    """Brock et al. 2021a via timm's ScaledStdConv2d: raw weights per channel mean 0, Var 1; gain 1, bias 0."""
    raw = conv.weight.detach().double().reshape(conv.out_channels, -1)
    assert raw.mean(1).abs().max() < 1e-6
    torch.testing.assert_close(raw.var(1, unbiased=False), torch.ones(conv.out_channels, dtype=torch.double))
    assert (conv.gain == 1).all() and (conv.bias is None or not conv.bias.any())


def wn(gain_of_stage_size):
    """Arpit et al. 2019: v orthogonal, g = sqrt(gain n_in / n_out), bias 0; gain from N, the stage's blocks."""

    def check(conv: nn.Module, n: int) -> None:
        g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
        n_in, n_out = fan(v)
        torch.testing.assert_close(g, torch.full_like(g, math.sqrt(gain_of_stage_size(n) * n_in / n_out)))
        flat = v.detach().reshape(v.shape[0], -1).double()
        gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
        torch.testing.assert_close(gram, torch.eye(len(gram), dtype=torch.double), atol=1e-5, rtol=0)
        assert not conv.bias.any()

    return check


def torch_linear_default(fc: nn.Linear) -> None:
    """PyTorch's nn.Linear default: weight and bias ~ U(-1/sqrt(n_in), 1/sqrt(n_in)), drawn (not constant)."""
    bound = 1 / math.sqrt(fc.in_features)
    for t in (fc.weight, fc.bias):
        assert t.abs().max() <= bound and t.abs().max() > bound / 2 and t.unique().numel() == t.numel()


def torch_conv_default(conv: nn.Module, n: int) -> None:
    """PyTorch's nn.Conv2d default, kaiming_uniform_(a=sqrt(5)): W ~ U(-1/sqrt(n_in), 1/sqrt(n_in)), Var 1/(3 n_in),
    drawn, not standardised: every value inside the bound, the extremes near it, (almost: float32) no two alike."""
    w = conv.weight.detach().double()
    bound = 1 / math.sqrt(fan(w)[0])
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound and w.unique().numel() > 0.99 * w.numel()


def zero_classifier(fc: nn.Linear) -> None:
    assert not fc.weight.any() and not fc.bias.any()


def fixup_scale(net: nn.Module) -> float:
    """Zhang et al. 2019 rule 2, computed from the paper's L and m (blocks, convs per branch)."""
    return len(net.blocks) ** (-1 / (2 * len(net.blocks[0].branch) - 2))


# Per scheme, independently of nfbench.schemes: (stem, inner branch, last branch, shortcut) conv rules, the start
# value of each scalar type, the classifier's rule.  `None` for a rule means "the scheme's weights".
HE = (None, None, None, None)
INIT_TABLE = {
    "bn": (HE, {}, torch_linear_default),
    "plain": (HE, {}, torch_linear_default),
    "idshort": (HE, {}, torch_linear_default),
    "learnscalar": (HE, {ScalarGain: 1.0}, torch_linear_default),
    "convshort": (HE, {}, torch_linear_default),
    "fixup": ((torch_conv_default, "fixup", zero, None), {ScalarBias: 0.0, ScalarGain: 1.0}, zero_classifier),
    "skipinit": (HE, {ScalarGain: 0.0}, torch_linear_default),
    "rezero": (HE, {ScalarGain: 0.0}, torch_linear_default),
    "zero_last": ((None, None, zero, None), {}, torch_linear_default),
    "nf": ((nf_standardised,) * 4, {ScalarGain: 0.0}, torch_linear_default),
    "wn": ((wn(lambda n: 1.0), wn(lambda n: 2.0), wn(lambda n: 1.0 / n), wn(lambda n: 1.0)), {}, torch_linear_default),
}


def test_the_init_table_covers_every_registered_scheme():
    assert sorted(INIT_TABLE) == SCHEMES.names()


@pytest.mark.parametrize(
    "name,model", [(n, m) for m in ("resnet20", "resnet50") for n in SCHEMES.names()] + [("bn", "he_resnet20")]
)
def test_every_tensor_starts_as_the_table_says(name, model):
    """Every parameter and buffer of a built network is checked against one row of INIT_TABLE."""
    from nfbench.models import split_stages

    torch.manual_seed(0)
    net = build(model, name)
    weights = build_scheme(option_config("init", name)).weights
    (stem, inner, last, shortcut), scalar_values, classifier = INIT_TABLE[name]
    checked: set[int] = set()

    def check(conv: nn.Module, how, n: int = 1) -> None:
        how = rule(weights, fixup_scale(net)) if how == "fixup" else (how or rule(weights))
        how(conv, n)
        checked.update(id(t) for t in conv.parameters())

    for conv in (m for m in net.stem.modules() if isinstance(m, nn.Conv2d)):
        check(conv, stem)
    for stage in split_stages(net.blocks):
        for block in stage:
            for conv in block.branch[:-1]:
                check(conv, inner, len(stage))
            check(block.branch[-1], last, len(stage))
            for conv in (m for m in block.shortcut.modules() if isinstance(m, nn.Conv2d)):
                check(conv, shortcut)
    scalars = [m for m in net.modules() if isinstance(m, Scalar)]
    assert {type(s) for s in scalars} == set(scalar_values)
    for s in scalars:
        assert s.weight.item() == scalar_values[type(s)]
        checked.add(id(s.weight))
    classifier(net.head.fc)
    checked.update(id(t) for t in net.head.fc.parameters())
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        assert (bn.weight == 1).all() and not bn.bias.any()
        assert not bn.running_mean.any() and (bn.running_var == 1).all() and bn.num_batches_tracked == 0
        checked.update(id(t) for t in bn.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == (name == "bn")
    unchecked = [n for n, p in net.named_parameters() if id(p) not in checked]
    assert not unchecked, f"init={name}: no table row covers {unchecked}"


@pytest.mark.parametrize("weights", RULES)
def test_a_large_unstandardised_layer_has_the_rules_std(weights):
    """init.standardize=false: a 3x3 conv of 64 -> 64 channels (36,864 draws) has the rule's std within 2%,
    not exactly (He et al. 2015: sqrt(2/n_in), sqrt(2/n_out); Brock et al. 2021a: gamma/sqrt(n_in))."""
    torch.manual_seed(0)
    net = build("resnet20", "plain", width=64, weights=weights, standardize=False)
    w = net.blocks[0].branch[1].weight.detach().double()
    n_in, n_out = fan(w)
    target = {"he_fanin": 2 / n_in, "he_fanout": 2 / n_out, "brock": BROCK_GAMMA2 / n_in}[weights] ** 0.5
    assert w.numel() == 36_864
    assert abs(w.std().item() / target - 1) < 0.02 and w.std().item() != target
    assert abs(w.mean().item()) < 3 * target / w.numel() ** 0.5


def test_without_standardisation_the_moments_are_only_sampled():
    """init.standardize=false: the variance is the target's in expectation, not exactly."""
    net = build("resnet20", "idshort", width=16, standardize=False)
    big = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() >= 2000]
    assert len(big) >= 8
    for w in big:
        target = 2.0 / fan(w)[1]
        ratio = w.var(unbiased=False).item() / target
        assert 0.85 < ratio < 1.15 and abs(ratio - 1) > 1e-5
        assert w.mean().item() != 0.0


@pytest.mark.parametrize("rule", RULES)
def test_zero_last_zeroes_the_last_branch_conv_only(rule):
    net = build("resnet50", "zero_last", weights=rule)
    other, inner, last = convs_by_role(net)
    assert all(not c.weight.any() for c in last)
    for conv in other + inner:
        assert_rule(conv.weight, rule)
    assert not any(b.scalars() for b in net.blocks)


# Fixup rule 2: L^(-1/(2m-2)) by hand.  ResNet-20: L = 9 blocks of m = 2 convs, 9^(-1/2) = 1/3;
# ResNet-50: L = 3 + 4 + 6 + 3 = 16 blocks of m = 3 convs, 16^(-1/4) = 1/2.
FIXUP_SCALE = {"resnet20": 1 / 3, "resnet50": 1 / 2}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("model,reference", [("resnet20", False), ("resnet50", False), ("resnet20", True)])
def test_fixup_rules(model, reference, rule):
    net = build(model, "fixup", weights=rule, reference_block=reference)
    other, inner, last = convs_by_role(net)
    for conv in inner:
        assert_rule(conv.weight, rule, scale=FIXUP_SCALE[model])  # rule 2
    stem = {id(m) for m in net.stem.modules()}
    for conv in (c for c in other if id(c) not in stem):
        assert_rule(conv.weight, rule)  # shortcuts: the unscaled standard rule
    assert all(not c.weight.any() for c in last)  # rule 1
    assert not net.head.fc.weight.any() and not net.head.fc.bias.any()
    # Rule 3: scalar biases at 0, one multiplier at 1 per branch.
    scalars = [m for m in net.modules() if isinstance(m, Scalar)]
    biases = [m for m in scalars if isinstance(m, ScalarBias)]
    gains = [m for m in scalars if isinstance(m, ScalarGain)]
    assert len(gains) == len(net.blocks) and all(g.weight.item() == 1.0 for g in gains)
    assert all(b.weight.item() == 0.0 for b in biases)
    m = len(net.blocks[0].branch)
    # Pre-activation: a bias before each activation and each conv (2m per block), plus the head's two;
    # reference: bias1a, 1b, 2a, 2b per block, plus the stem's bias1 and the head's bias2.
    assert len(biases) == len(net.blocks) * (4 if reference else 2 * m) + 2


# hongyi-zhang/Fixup (commits e57b6c0, c5a8295): the init loop of FixupResNet.__init__ redraws only the
# blocks' convs and the classifier, so
# - the stem conv keeps PyTorch's nn.Conv2d default, U(+-1/sqrt(n_in)): cifar/models/fixup_resnet_cifar.py
#   line 56 (conv3x3(3, 16)) and imagenet/models/fixup_resnet_imagenet.py lines 102-103 (7x7/2), neither in the
#   loop (cifar lines 66-72, imagenet lines 115-129);
# - a 1x1 downsample conv gets N(0, 2/n_out), n_out = c_out k k, unscaled by L: imagenet lines 119-120 (basic)
#   and 125-126 (bottleneck); the CIFAR reference has none (option A: AvgPool2d(1, stride) + zero channels,
#   cifar lines 40-42, 78-80);
# - the classifier weight and bias start at 0: cifar lines 70-72, imagenet lines 127-129.
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(
    "model,stem,reference",
    [
        ("resnet20", "cifar", False),
        ("resnet50", "cifar", False),
        ("resnet50", "imagenet", False),
        ("resnet20", "cifar", True),
        ("resnet18", "imagenet", True),
    ],
)
def test_fixup_stem_shortcut_and_classifier_follow_the_reference_code(model, stem, reference, rule):
    net = build_model(
        option_config("model", model, width=16, stem=stem),
        build_scheme(option_config("init", "fixup", weights=rule, reference_block=reference)),
        10,
        3,
        32,
    )
    stem_convs = [m for m in net.stem.modules() if isinstance(m, nn.Conv2d)]
    assert len(stem_convs) == 1
    torch_conv_default(stem_convs[0], 1)  # whatever init.weights says: the reference never redraws it
    shortcuts = [m for b in net.blocks for m in b.shortcut.modules() if isinstance(m, nn.Conv2d)]
    # init.reference_block builds the CIFAR reference block (option A) on every basic-block model.
    assert len(shortcuts) == (0 if reference else sum(b.transition for b in net.blocks))
    for conv in shortcuts:
        assert conv.kernel_size == (1, 1)
        assert_rule(conv.weight, rule)  # he_fanout is the reference's N(0, 2/n_out); no L scaling
    zero_classifier(net.head.fc)


def nf_effective_weight(conv: ScaledStdConv2d) -> torch.Tensor:
    """docs/science.md#standardisation: per output channel, gain * (W - mean) / (std * sqrt(n_in)), std the biased
    one."""
    w = conv.weight.detach().double()
    flat = w.reshape(w.shape[0], -1)
    std = flat.std(1, unbiased=False, keepdim=True)
    eff = (
        conv.gain.detach().double().reshape(-1, 1)
        * (flat - flat.mean(1, keepdim=True))
        / (std * math.sqrt(flat.shape[1]))
    )
    return eff.reshape_as(w)


@pytest.mark.parametrize("model", ["resnet20", "resnet50"])
def test_nf_convs_are_scaled_weight_standardised_with_brocks_moments(model):
    net = build(model, "nf")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(c, ScaledStdConv2d) for c in convs)
    x = torch.randn(2, 4, 8, 8)
    for conv in convs:
        assert (conv.gain == 1).all()
        raw = conv.weight.detach().double().reshape(conv.out_channels, -1)
        torch.testing.assert_close(raw.var(1, unbiased=False), torch.ones(conv.out_channels, dtype=torch.double))
        eff = nf_effective_weight(conv)
        n_in = fan(eff)[0]
        # Brock's rule: with the activation's gamma, per-channel Var = gamma^2 / n_in, mean 0.
        flat = (NF_GAMMA * eff).reshape(eff.shape[0], -1)
        assert (flat.mean(1).abs() < 1e-9).all()
        torch.testing.assert_close(
            flat.var(1, unbiased=False),
            torch.full((eff.shape[0],), NF_GAMMA**2 / n_in, dtype=torch.double),
            rtol=1e-4,
            atol=0,
        )  # timm's eps = 1e-5
        if conv.in_channels == 4:  # the layer computes with exactly that weight
            ref = F.conv2d(x.double(), eff, None, conv.stride, conv.padding)
            torch.testing.assert_close(conv(x).double(), ref, rtol=1e-4, atol=1e-5)
    act = net.blocks[0].act
    z = torch.randn(1000)
    torch.testing.assert_close(act(z), NF_GAMMA * z.clamp(min=0))
    gates = [b.gate for b in net.blocks]
    assert all(g.alpha == 0.2 and g.gain.weight.item() == 0.0 for g in gates)


def test_nf_beta_sequence_resets_after_transitions():
    """1/beta_l = 1/sqrt(expected Var(x_l)): 1 at the stem, + alpha^2 per block, 1 + alpha^2 after a transition."""
    a2 = 0.2**2
    # ResNet-18 (2-2-2-2): stage 1 starts without a transition (64 -> 64, stride 1).
    var18 = [1, 1 + a2, 1 + 2 * a2, 1 + a2, 1 + 2 * a2, 1 + a2, 1 + 2 * a2, 1 + a2]
    net18 = build("resnet18", "nf")
    torch.testing.assert_close([b.input_scale for b in net18.blocks], [v**-0.5 for v in var18])
    # ResNet-50 (3-4-6-3): every stage starts with a transition (64 -> 256 in stage 1).
    var50 = [1.00, 1.04, 1.08, 1.12, 1.04, 1.08, 1.12, 1.16, 1.04, 1.08, 1.12, 1.16, 1.20, 1.24, 1.04, 1.08]
    net50 = build("resnet50", "nf")
    torch.testing.assert_close([b.input_scale for b in net50.blocks], [v**-0.5 for v in var50])
    # timm's nf_resnet50, an independent implementation, has the same sequence.
    timm50 = build("nf_resnet50", "nf", width=8)
    torch.testing.assert_close([b.input_scale for b in timm50.blocks], [v**-0.5 for v in var50])
    # Where the scale goes: x_{l+1} = x_l + alpha g f(x_l / beta_l) with the identity shortcut on the raw x_l;
    # a transition's conv shortcut takes the activated, scaled input.
    block, transition = net50.blocks[1], net50.blocks[3]
    with torch.no_grad():
        block.gate.gain.weight.fill_(1.0)
        x = torch.randn(2, block.in_chans, 4, 4)
        f = x * 1.04**-0.5
        for conv in block.branch:
            f = conv(block.act(f))
        torch.testing.assert_close(block(x), x + 0.2 * f)
        x = torch.randn(2, transition.in_chans, 4, 4)
        torch.testing.assert_close(transition.skip(x), transition.shortcut.conv(transition.act(x * 1.12**-0.5)))


@pytest.mark.parametrize(
    "model,blocks_per_stage", [("resnet20", [3] * 9), ("resnet50", [3] * 3 + [4] * 4 + [6] * 6 + [3] * 3)]
)
def test_wn_g_values_and_orthogonal_directions(model, blocks_per_stage):
    """Arpit et al.: g = sqrt(gain n_in / n_out), gain 1 (stem, shortcuts), 2 (branch convs before a ReLU),
    1/N (a branch's last conv, N blocks in its stage); v orthogonal; biases 0."""
    net = build(model, "wn")

    def check(conv: nn.Conv2d, gain: float) -> None:
        g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
        n_in, n_out = fan(v)
        assert torch.equal(g, torch.full_like(g, math.sqrt(gain * n_in / n_out)))
        flat = v.detach().reshape(v.shape[0], -1).double()
        gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
        torch.testing.assert_close(gram, torch.eye(len(gram), dtype=torch.double), atol=1e-5, rtol=0)
        row_norms = conv.weight.detach().reshape(v.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(row_norms, g.detach().reshape(-1))
        assert not conv.bias.any()

    check(net.stem[0], 1.0)
    for block, n in zip(net.blocks, blocks_per_stage, strict=True):
        for conv in block.branch[:-1]:
            check(conv, 2.0)
        check(block.branch[-1], 1.0 / n)
        if hasattr(block.shortcut, "conv"):
            check(block.shortcut.conv, 1.0)


# --- identity at initialisation -------------------------------------------------------------------


def block_io(net: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every block on a real forward pass."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append((i[0], o))) for b in net.blocks]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


@torch.no_grad()
def test_wn_preactivation_branch_adds_about_half_of_what_arpit_et_al_assume():
    """Arpit et al.'s block (victorcampos7/weightnorm-init, models/residual_blocks.py) is
    f(x) = conv2(relu(conv1(x))) on the raw x: with gains 2 and 1/N each block of a stage of N adds Var(x) / N.
    Ours is pre-activation, f(x) = conv2(relu(conv1(relu(x)))), and relu keeps about half of a symmetric x's
    second moment: the same weights on the same block input give about half the branch variance
    (docs/schemes.md; scripts/wn_branch_variance.py prints the table)."""
    pre_over_paper, paper_n, ours_n = [], [], []
    for seed in range(3):
        torch.manual_seed(seed)
        net = build("resnet20", "wn", width=32, image_size=32)
        io = block_io(net, torch.randn(16, 3, 32, 32))
        for block, (x, y) in zip(net.blocks, io):
            if block.transition:
                continue
            ours = y - block.skip(x)
            paper = block.branch[1](F.relu(block.branch[0](x)))
            n = 3  # blocks per stage of ResNet-20
            pre_over_paper.append((ours.var() / paper.var()).item())
            paper_n.append((paper.var() * n / x.var()).item())
            ours_n.append((ours.var() * n / x.var()).item())
    assert len(pre_over_paper) == 3 * 7
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert 0.4 < mean(pre_over_paper) < 0.6
    assert 0.75 < mean(paper_n) < 1.15  # the paper's assumption holds for the paper's block
    assert 0.3 < mean(ours_n) < 0.6


# docs/science.md#identity-at-init: the schemes whose every block starts as its shortcut (a zero last conv, gate or
# skip gain).
IDENTITY_SCHEMES = {"fixup", "skipinit", "rezero", "zero_last", "nf"}
# Every registered scheme on basic, bottleneck and wide blocks; then the options that change the answer.
IDENTITY_CASES = [(m, s, {}) for m in ("resnet20", "resnet50", "wrn") for s in SCHEMES.names()] + [
    ("resnet20", "fixup", {"reference_block": True}),
    ("nf_resnet26", "nf", {}),
    ("resnet20", "nf", {"skip_gain": 1.0}),
]


@pytest.mark.parametrize("model,init,kw", IDENTITY_CASES)
def test_blocks_start_as_their_shortcut_exactly_under_the_identity_schemes(model, init, kw):
    net = build(model, init, width=8 if model.startswith("nf_") else 4, image_size=32, **kw)
    io = block_io(net, torch.randn(2, 3, 32, 32))
    assert len(io) == len(net.blocks)
    if init in IDENTITY_SCHEMES and kw.get("skip_gain", 0.0) == 0.0:
        assert all(torch.equal(y, block.skip(x)) for block, (x, y) in zip(net.blocks, io))
    else:
        assert not any(torch.allclose(y, block.skip(x)) for block, (x, y) in zip(net.blocks, io))


# --- batch independence -----------------------------------------------------------------------------


@pytest.mark.parametrize("model,init", [("resnet50", s) for s in SCHEMES.names()] + [("nf_resnet26", "nf")])
def test_only_batchnorm_couples_the_samples_of_a_batch(model, init):
    torch.manual_seed(0)
    net = build(model, init, width=8 if model.startswith("nf_") else 4).train()
    with torch.no_grad():  # move zero-initialised layers and gates off zero, so every path counts
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        alone, in_batch = net(x[:2]), net(x)[:2]
    assert alone.abs().max() > 0
    if init == "bn":
        assert (alone - in_batch).abs().max() > 1e-3 * alone.abs().max()
    else:
        torch.testing.assert_close(alone, in_batch, rtol=1e-4, atol=1e-5)


# --- the optimiser and the schemes' scalars ---------------------------------------------------------


@pytest.mark.parametrize(
    "init,kw,count",
    [
        # Fixup, pre-activation ResNet-20: 2 biases per conv (before the activation, before the conv) and a
        # multiplier per block = 5 x 9, plus the head's two; reference: 5 per block, stem and head bias.
        # Fixup's classifier bias joins them (the +1): the reference gives every bias a tenth of the lr.
        ("fixup", {}, 5 * 9 + 2 + 1),
        ("fixup", {"reference_block": True}, 5 * 9 + 2 + 1),
        ("skipinit", {}, 9),
        ("rezero", {}, 9),
        ("nf", {}, 9),
    ],
)
def test_scheme_scalars_get_a_tenth_of_the_lr_and_no_weight_decay(init, kw, count):
    net = build("resnet20", init, **kw)
    groups = {g["name"]: g for g in param_groups(net, OptimConfig(lr=0.1, weight_decay=1e-4, scalar_lr_mult=0.1))}
    scalars = groups["scalars"]
    assert len(scalars["params"]) == count
    assert scalars["lr"] == pytest.approx(0.01) and scalars["weight_decay"] == 0.0
    assert all(p.ndim == 0 for p in scalars["params"] if p is not net.head.fc.bias)
    assert not any(p.ndim == 0 for p in groups["weights"]["params"])


@pytest.mark.parametrize(
    "init,kw,group,lr",
    [
        # hongyi-zhang/Fixup, cifar/cifar_train.py and imagenet/imagenet_train.py: every parameter whose name holds
        # 'bias' or 'scale' trains at base_lr / 10, so the classifier's bias does too.
        ("fixup", {}, "scalars", 0.01),
        ("fixup", {"reference_block": True}, "scalars", 0.01),
        # Elsewhere the classifier's bias is an ordinary bias: the base lr.
        ("bn", {}, "no_decay", 0.1),
        ("skipinit", {}, "no_decay", 0.1),
    ],
)
def test_fixup_classifier_bias_takes_the_scalar_lr_mult(init, kw, group, lr):
    net = build("resnet20", init, **kw)
    groups = param_groups(net, OptimConfig(lr=0.1, weight_decay=1e-4, scalar_lr_mult=0.1, no_decay_bias=True))
    fc = net.head.fc
    assert [g["name"] for g in groups if any(p is fc.bias for p in g["params"])] == [group]
    assert [g["name"] for g in groups if any(p is fc.weight for p in g["params"])] == ["weights"]
    # One plain SGD step on a unit gradient moves the bias by exactly its group's lr.
    opt = torch.optim.SGD(groups, lr=0.1)
    before = fc.bias.detach().clone()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    fc.bias.grad = torch.ones_like(fc.bias)
    opt.step()
    torch.testing.assert_close(before - fc.bias.detach(), torch.full_like(before, lr))
