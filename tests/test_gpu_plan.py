"""scripts/gpu_plan.py: the GPU calls' runs are chosen from call 1's figures by priority, never by
shortening a recipe, and the ResNet-50 plan drops what it says it drops (short runs and main arms share
scheme names)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_plan.py"


@pytest.fixture(scope="module")
def plan():
    spec = importlib.util.spec_from_file_location("gpu_plan", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


HE = {
    "concurrency": {
        "rows": [
            {"jobs": 1, "images_per_s": 40000},
            {"jobs": 2, "images_per_s": 52000},
            {"jobs": 4, "images_per_s": 56000},
        ]
    },
    "calibration": {"steady_epoch_s": 1.6, "fixed_s": 12.0},
}
ALONE = {"bn": 13000, "idshort": 19500, "learnscalar": 17000, "convshort": 18200}
R50 = {
    "concurrency": {
        "rows": [
            {"jobs": 1, "images_per_s": 13000, "schemes": ["bn"]},
            {"jobs": 2, "images_per_s": 17000, "schemes": ["bn", "idshort"]},
            {"jobs": 3, "images_per_s": 18000, "schemes": ["bn", "idshort", "learnscalar"]},
        ],
        "alone": [{"scheme": s, "images_per_s": r} for s, r in ALONE.items()],
    },
    "calibration": {"steady_epoch_s": 3.6, "fixed_s": 15.0},
}
SHORTS = ["convshort", "idshort", "learnscalar", "r101_convshort", "r101_idshort", "r101_learnscalar"]
ARMS = ["bn", "convshort", "idshort", "learnscalar"]


def test_he_runs_are_the_first_that_fit_and_never_none(plan, capsys):
    fits = [plan.he_plan(HE, seconds, 164, 4) for seconds in (100, 300, 460, 2000)]
    assert fits == [1, 1, 2, 4]  # 1 run: 296 s; 2: 449 s (A(2) = 1.3); 4: 823 s


def test_gain_counts_a_mix_of_schemes_against_their_own_rates(plan):
    # 2 processes, bn + idshort: 17,000 against a mean of 16,250 alone, not against bn's 13,000
    assert plan.gain(R50["concurrency"], 2) == pytest.approx(17000 / 16250)


def test_r50_drops_optional_arms_then_resnet101_then_resnet50_short_runs(plan, capsys):
    epochs, main, short, _ = plan.r50_plan(R50, 530, ARMS, SHORTS, 30, 200, 1, ["bn_conv_shortcut"], 3)
    assert epochs >= 30 and main == ARMS  # every main arm kept, one E for all
    assert short == SHORTS[:3]  # the ResNet-101 short runs went before the ResNet-50 ones
    out = capsys.readouterr().out
    assert "dropped main bn_conv_shortcut" in out and "dropped short r101_convshort" in out


def test_r50_keeps_the_floor_and_the_short_runs_when_nothing_buys_it(plan, capsys):
    epochs, main, short, _ = plan.r50_plan(R50, 60, ARMS, SHORTS, 30, 200, 1, ["bn_conv_shortcut"], 3)
    assert (epochs, main, short) == (30, ARMS, SHORTS)


def test_project_reads_the_pace_after_the_epoch_given(plan, tmp_path):
    rows = [{"epoch": e, "wall_s": w} for e, w in [(1, 10.0), (2, 12.0), (3, 14.0), (4, 20.0), (5, 26.0)]]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    [(_, done, planned, need)] = plan.project(100, [f"{tmp_path}:10:3"])
    assert (done, planned, need) == (5, 10, 30.0)  # epochs after 3 took 6 s each; 5 are left
