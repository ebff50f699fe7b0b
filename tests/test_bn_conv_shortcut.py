"""``init=bn init.conv_shortcut=true`` (issue 12, item 3): the BatchNorm baseline with ConvShort's 1x1 conv
shortcut in every block, the network whose counts Civitelli et al. Tables 1-2 print as "BatchNorm"."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nfbench.analysis.report import aggregate, collect, markdown_table
from nfbench.analysis.summary import format_parts, format_rows, summarize
from nfbench.config import option_config
from nfbench.models import ConvShortcut, IdentityShortcut, build_model
from nfbench.schemes import build_scheme
from tests.test_experiments import grid
from tests.test_schemes import assert_rule
from tests.test_user_errors import nfbench_train, refusal

NO_DATA = ["data=cifar10", "data.root=/nonexistent", "data.download=false"]

# Civitelli et al., "A Robust Initialization of Residual Blocks for Effective ResNet Training without Batch
# Normalization": Table 2 (ResNet-18) and Table 1 (ResNet-50, ResNet-101), the "BatchNorm" rows, CIFAR-10
# 32x32x3: (params M, GFLOPs).  The same numbers as the tables' ConvShort rows.
PAPER_BATCHNORM = {"resnet18": (11.52, 1.16), "resnet50": (38.02, 4.2), "resnet101": (74.78, 8.92)}


def bn_affine(depths: list[int], bottleneck: bool) -> int:
    """BN affine parameters of a pre-activation ResNet at the published widths (stem 64), by hand: weight and
    bias for every channel that a BN sees, one BN before each branch conv (c_in, then the branch width for
    the others) and one before the head."""
    c_in, total = 64, 0
    for depth, width in zip(depths, (64, 128, 256, 512)):
        out = 4 * width if bottleneck else width
        for _ in range(depth):
            total += c_in + width * (2 if bottleneck else 1)
            c_in = out
    return 2 * (total + c_in)


BN_AFFINE = {
    "resnet18": bn_affine([2, 2, 2, 2], False),
    "resnet50": bn_affine([3, 4, 6, 3], True),
    "resnet101": bn_affine([3, 4, 23, 3], True),
}


def test_bn_affine_hand_counts():
    assert BN_AFFINE == {"resnet18": 7_808, "resnet50": 45_440, "resnet101": 97_664}


@pytest.mark.parametrize("model", list(PAPER_BATCHNORM))
def test_counts_against_civitelli_tables_1_2(make_cfg, model):
    """Conv + classifier parameters equal ConvShort's and round to the paper's BatchNorm row; FLOPs are
    ConvShort's (BN counts none) and within 1% of it.  With the BN affine parameters on top, ResNet-50 and
    -101 round to 38.06 M and 74.88 M, not the printed 38.02 M and 74.78 M: the paper did not count them."""
    row = summarize(make_cfg([*NO_DATA, f"model={model}", "init=bn", "init.conv_shortcut=true"]))
    convshort = summarize(make_cfg([*NO_DATA, f"model={model}", "init=convshort"]))
    params_m, gflops = PAPER_BATCHNORM[model]
    assert row["bn_params"] == BN_AFFINE[model]
    assert row["params"] - row["bn_params"] == convshort["params"]
    assert round((row["params"] - row["bn_params"]) / 1e6, 2) == params_m
    assert row["flops"] == convshort["flops"] and abs(row["flops"] / 1e9 - gflops) / gflops < 0.01
    with_bn = round(row["params"] / 1e6, 2)
    assert (with_bn == params_m) == (model == "resnet18")  # 11,524,426 rounds to 11.52 M either way
    assert (
        row["init"] == "bn_conv_shortcut"
        and row["paper"]
        == f"{params_m:.2f} M, {gflops} G ({'Table 2' if model == 'resnet18' else 'Table 1'}, BatchNorm)"
    )


def test_summary_prints_the_papers_batchnorm_row_beside_both_baselines(make_cfg):
    rows = [
        summarize(make_cfg([*NO_DATA, "model=resnet50", "init=bn", f"init.conv_shortcut={c}"]))
        for c in ("false", "true")
    ]
    lines = format_rows(rows).splitlines()
    assert "of which BN affine" in lines[0] and "Civitelli et al." in lines[0]
    assert (
        lines[2].split()[1] == "bn" and "23,513,162" in lines[2] and "38.02 M, 4.2 G (Table 1, BatchNorm)" in lines[2]
    )
    assert lines[3].split()[1] == "bn_conv_shortcut" and "38,062,154" in lines[3] and "45,440" in lines[3]
    assert "38.02 M, 4.2 G (Table 1, BatchNorm)" in lines[3]
    assert format_parts(rows[1]).splitlines()[0] == (
        "resnet50 / bn_conv_shortcut (he_fanin weights), input 3x32x32, "
        "10 classes; 45,440 of the parameters are BN affine; "
        "Civitelli et al.: 38.02 M, 4.2 G (Table 1, BatchNorm)"
    )


def test_no_paper_column_outside_the_papers_setting(make_cfg):
    """Narrow widths and other data sets have no published counts."""
    assert summarize(make_cfg(["data=digits", "init=bn", "init.conv_shortcut=true"]))["paper"] is None
    assert summarize(make_cfg([*NO_DATA, "model=resnet18", "model.width=8", "init=bn"]))["paper"] is None


def test_every_block_has_a_conv_shortcut_initialised_like_the_branch():
    torch.manual_seed(0)
    net = build_model(
        option_config("model", "resnet20", width=4),
        build_scheme(option_config("init", "bn", conv_shortcut=True)),
        10,
        3,
        16,
    )
    assert all(isinstance(b.shortcut, ConvShortcut) for b in net.blocks)
    for b in net.blocks:
        assert_rule(b.shortcut.conv.weight, "he_fanin")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2 * 9 + 1
    standard = build_model(
        option_config("model", "resnet20", width=4), build_scheme(option_config("init", "bn")), 10, 3, 16
    )
    assert [type(b.shortcut) for b in standard.blocks].count(IdentityShortcut) == 7


def test_the_option_file_is_init_bn_with_the_key(make_cfg):
    a, b = make_cfg(["init=bn_conv_shortcut"]).init, make_cfg(["init=bn", "init.conv_shortcut=true"]).init
    assert a == b and a.name == "bn" and a.conv_shortcut


@pytest.mark.parametrize(
    "name",
    [
        "civitelli_cifar10_resnet18",
        "civitelli_cifar10_resnet50",
        "civitelli_cifar10_resnet101",
        "civitelli_cifar100_resnet50",
    ],
)
def test_civitelli_grids_hold_both_batchnorm_baselines(name):
    keys, points = grid(name)
    inits = {p[keys.index("init")] for p in points}
    assert {"bn", "bn_conv_shortcut"} <= inits


@pytest.mark.parametrize("init", ["convshort", "idshort", "fixup"])
def test_other_schemes_refuse_the_key(make_cfg, init):
    """init.conv_shortcut is a key of init=bn's schema alone: Hydra refuses it under another scheme."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        make_cfg([f"init={init}", "init.conv_shortcut=true"])
    assert "Key 'conv_shortcut' not in" in str(e.value.__cause__)


def test_the_cli_refuses_in_one_line(tmp_path):
    message = refusal(nfbench_train("init=idshort", "init.conv_shortcut=true", run_dir=tmp_path / "run"))
    assert message.startswith("init.conv_shortcut is a key of init=bn only")


def test_the_report_keeps_the_two_baselines_apart(make_cfg, tmp_path):
    """Both train; the report's init column names the variant, so they are two rows, not one mixed group."""
    from nfbench.engine.loop import train
    from tests.conftest import TINY

    for i, init in enumerate(["init=bn", "init=bn_conv_shortcut"]):
        train(make_cfg([*TINY, "trainer.epochs=1", init], tmp_path / f"run{i}"))
    table = aggregate(collect([tmp_path]))
    assert list(table["init"]) == ["bn", "bn_conv_shortcut"] and not any(table["mixed_keys"])
    assert "bn_conv_shortcut" in markdown_table(table, ["init", "weights"])
