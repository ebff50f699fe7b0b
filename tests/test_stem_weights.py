"""``init.stem_weights`` (issue 12, item 2): the stem conv's own weight rule, the stem alone, the
variance it sends into the network against a hand computation, the default unchanged, and refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nfbench.config import option_config
from nfbench.engine.validation import validate
from nfbench.errors import ConfigError
from nfbench.models import build_model
from nfbench.schemes import build_scheme
from tests.test_schemes import RULES, assert_rule
from tests.test_user_errors import nfbench_train, refusal

# The schemes that draw their convs by a weight rule (nf and wn reparametrise theirs).
RULE_SCHEMES = ("bn", "plain", "idshort", "learnscalar", "convshort", "fixup", "skipinit", "rezero", "zero_last")

# Hand computation, CIFAR stem of ResNet-20 (3x3 conv, 3 -> 16 channels): n_in = 3*3*3 = 27,
# n_out = 3*3*16 = 144.  For inputs of unit variance, Var[y] = n_in Var[W] (mean over output channels,
# exact for standardised weights):
#   he_fanin  27 * 2/27            = 2
#   he_fanout 27 * 2/144           = 0.375
#   brock     27 * (2/(1-1/pi))/27 = 2/(1-1/pi) = 2.9339
STEM_VARIANCE = {"he_fanin": 2.0, "he_fanout": 0.375, "brock": 2.0 / (1.0 - 1.0 / math.pi)}


def build(
    init: str, model: str = "resnet20", width: int | None = 4, image_size: int = 16, stem: str = "auto", **kw
) -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        option_config("model", model, width=width, stem=stem),
        build_scheme(option_config("init", init, **kw)),
        10,
        3,
        image_size,
    )


def stem_conv(net: nn.Module) -> nn.Conv2d:
    (conv,) = [m for m in net.stem.modules() if isinstance(m, nn.Conv2d)]
    return conv


@pytest.mark.parametrize("model", ["resnet20", "resnet18"])
@pytest.mark.parametrize("stem_rule", RULES)
@pytest.mark.parametrize("init", RULE_SCHEMES)
def test_the_stem_rule_applies_to_the_stem_conv_only(init, stem_rule, model):
    """The stem conv has exactly ``stem_rule``'s moments; every other tensor is bit-identical to the network
    built without the key (the same seeded draws), so only the stem's scale changes."""
    extra = {"model": model, "stem": "imagenet" if model == "resnet18" else "cifar"}
    plain, ruled = build(init, **extra), build(init, stem_weights=stem_rule, **extra)
    assert_rule(stem_conv(ruled).weight, stem_rule)
    stem_names = {f"stem.{n}" for n, _ in ruled.stem.named_parameters()}
    theirs = plain.state_dict()
    for name, tensor in ruled.state_dict().items():
        if name not in stem_names:
            assert torch.equal(tensor, theirs[name]), name


@pytest.mark.parametrize("init", [s for s in RULE_SCHEMES if s != "fixup"])
def test_unset_is_the_schemes_own_rule_bit_for_bit(init):
    """init.stem_weights=null keeps every result made before the key existed: the stem follows init.weights.
    Not Fixup: unset, its stem keeps PyTorch's default draw, as the reference's does (test_schemes.py)."""
    default = build_scheme(option_config("init", init)).weights
    for weights in (None, "brock"):
        unset, explicit = build(init, weights=weights), build(init, weights=weights, stem_weights=weights or default)
        assert all(torch.equal(a, b) for a, b in zip(unset.state_dict().values(), explicit.state_dict().values()))


@pytest.mark.parametrize("stem_rule", RULES)
def test_cifar_stem_variance_matches_the_hand_computation(stem_rule):
    """ResNet-20 at its published width (stem 3x3x3 -> 16) on unit-Gaussian inputs: the stem output's
    variance away from the zero-padded border is n_in Var[W] (STEM_VARIANCE, computed by hand)."""
    net = build("convshort", width=None, image_size=32, stem_weights=stem_rule)
    conv = stem_conv(net)
    assert tuple(conv.weight.shape) == (16, 3, 3, 3)
    torch.manual_seed(1)
    with torch.no_grad():
        y = net.stem(torch.randn(256, 3, 32, 32))[:, :, 1:-1, 1:-1]
    assert y.var().item() == pytest.approx(STEM_VARIANCE[stem_rule], rel=0.02)


def test_full_width_stem_with_he_fanout_sends_about_0_09():
    """The issue's figure: a 64-channel CIFAR stem (ResNet-18/50/101) with He fan-out, 27 * 2/576 = 0.09375."""
    net = build("idshort", model="resnet18", width=None, image_size=32)
    torch.manual_seed(1)
    with torch.no_grad():
        y = net.stem(torch.randn(64, 3, 32, 32))[:, :, 1:-1, 1:-1]
    assert y.var().item() == pytest.approx(27 * 2 / 576, rel=0.02)


@pytest.mark.parametrize(
    "init,value,message",
    [
        ("nf", "he_fanin", "init.stem_weights='he_fanin' is not allowed with init=nf: choose one of brock"),
        ("wn", "brock", "init.stem_weights='brock' is not allowed with init=wn: init=wn sets every weight itself"),
    ],
)
def test_a_rule_the_scheme_cannot_apply_is_refused(make_cfg, init, value, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg([f"init={init}", f"init.stem_weights={value}"]))


def test_the_cli_refuses_in_one_line(tmp_path):
    """A rule that is no rule at all is Hydra's refusal (init.stem_weights is a closed set); one the
    scheme cannot apply is the scheme's: both one line."""
    message = refusal(nfbench_train("init=convshort", "init.stem_weights=xavier", run_dir=tmp_path / "run"))
    assert "init.stem_weights" in message and "expected one of [he_fanin, he_fanout, brock]" in message
    message = refusal(nfbench_train("init=nf", "init.stem_weights=he_fanin", run_dir=tmp_path / "run"))
    assert message.startswith("init.stem_weights='he_fanin' is not allowed with init=nf: choose one of brock")
