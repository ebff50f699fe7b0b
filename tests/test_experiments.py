"""Every experiment preset (conf/experiment/*.yaml): its grid composes and validates point by point,
it trains one step on tiny data, and its recipe is the one docs/science.md#recipes and the papers give."""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from nfbench import rundir
from nfbench.cli.main import CONF_DIR
from nfbench.engine.loop import train
from nfbench.engine.validation import validate

# Presets that select hydra/sweeper=optuna compose only where the nfbench[tune] extra is installed.
NEEDS_OPTUNA = {"lr_search"}
HAS_OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
PRESETS = sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml"))
PRESET_PARAMS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            name in NEEDS_OPTUNA and not HAS_OPTUNA, reason="needs hydra-optuna-sweeper: pip install 'nfbench[tune]'"
        ),
    )
    for name in PRESETS
]
# Presets whose data set has no default location need one to compose.
NEEDS_ROOT = {"civitelli_cifar10_cpu": ["data.root=/nonexistent"]}
# Tiny data and model, one optimiser step per epoch: mechanics, not accuracy.
ONE_STEP = [
    "data=digits",
    "data.train_subset=32",
    "data.test_subset=32",
    "data.batch_size=32",
    "data.test_batch_size=32",
    "data.num_workers=0",
    "model.width=4",
    "trainer.progress=false",
    "trainer.device=cpu",
]


def sweep_values(key: str, value: str) -> list[str]:
    """A choice list's values; an Optuna search interval's two ends, the extremes it can try."""
    override = OverridesParser.create().parse_override(f"{key}={value}")
    if override.is_interval_sweep():
        return [str(float(override.value().start)), str(float(override.value().end))]
    return [str(v) for v in override.sweep_string_iterator()] if override.is_sweep_override() else [str(value)]


def grid(name: str) -> tuple[list[str], list[tuple[str, ...]]]:
    """The preset's hydra.sweeper.params as keys and the list of their value combinations."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", overrides=[f"experiment={name}", *NEEDS_ROOT.get(name, [])], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    params = OmegaConf.to_container(params) if params else {}
    keys = list(params)
    return keys, list(itertools.product(*(sweep_values(k, str(params[k])) for k in keys)))


def test_presets_found():
    for name in (
        "civitelli_cifar10_resnet18",
        "civitelli_cifar10_resnet50",
        "civitelli_cifar10_resnet101",
        "civitelli_cifar100_resnet50",
        "civitelli_imagenet_resnet50",
        "fixup_cifar10_resnet110",
        "fixup_imagenet_resnet50",
        "skipinit_rezero_cifar10",
        "nf_resnet50_imagenet",
        "arpit_wn_cifar10_wrn",
    ):
        assert name in PRESETS


@pytest.mark.parametrize("name", PRESET_PARAMS)
def test_every_grid_point_composes_and_validates(make_cfg, name):
    """Every combination of the grid's values composes and passes validate(); seeds cannot clash
    with anything, so one seed stands for all."""
    keys, points = grid(name)
    for point in {tuple(v if k != "seed" else "0" for k, v in zip(keys, p)) for p in points}:
        cfg = make_cfg([f"experiment={name}", *NEEDS_ROOT.get(name, []), *(f"{k}={v}" for k, v in zip(keys, point))])
        validate(cfg)
        for k, v in zip(keys, point):
            group = k not in ("seed",) and "." not in k
            got = OmegaConf.select(cfg, f"{k}.name" if group else k)
            # A group option may name another (conf/init/bn_conv_shortcut.yaml: name bn, conv_shortcut true).
            want = OmegaConf.load(Path(CONF_DIR, k, f"{v}.yaml")).get("name", v) if group else v
            assert str(got).lower() == str(want).lower() or (v == "null" and got is None), (k, v, got)


@pytest.mark.parametrize("name", PRESET_PARAMS)
def test_preset_trains_one_step(make_cfg, tmp_path, name):
    """Every preset, at its first grid point, trains one step on the digits and evaluates."""
    keys, points = grid(name)
    first = [f"{k}={v}" for k, v in zip(keys, points[0])]
    # One epoch leaves no room for a warm-up (validate() requires it to end first).
    cfg = make_cfg([f"experiment={name}", *first, *ONE_STEP, "trainer.epochs=1", "sched.warmup_epochs=0"], tmp_path)
    result = train(cfg)
    assert result["status"] == "finished" and result["epochs"] == 1
    assert result["experiment"] == name
    assert math.isfinite(result["train_loss"])
    # top-1 is a count of the 32 test images, and the number the run directory's last epoch recorded.
    correct = result["test_top1"] * 32 / 100
    assert correct == round(correct) and 0 <= correct <= 32
    assert result["test_top1"] == rundir.read_metrics(tmp_path / "metrics.jsonl")[-1]["test_top1"]


def preset(name: str, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("config", overrides=[f"experiment={name}", *NEEDS_ROOT.get(name, []), *overrides])


@pytest.mark.parametrize("name", [p for p in PRESETS if p.startswith("civitelli_") and not p.endswith("_cpu")])
def test_civitelli_recipe(name):
    """docs/science.md#recipe-civitelli: SGD 0.01, momentum 0.9, batch 128 (ImageNet 100), cosine per epoch,
    RandAugment, label smoothing on ImageNet only, three seeds."""
    cfg = preset(name)
    imagenet = "imagenet" in name
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov) == ("sgd", 0.01, 0.9, False)
    assert cfg.data.batch_size == (100 if imagenet else 128)
    assert cfg.sched.name == "cosine" and not cfg.sched.per_step and cfg.sched.warmup_epochs == 0
    assert cfg.data.randaugment
    if not imagenet:
        assert cfg.data.crop_padding == 4 and cfg.data.hflip
    assert (cfg.trainer.label_smoothing > 0) == imagenet
    assert cfg.trainer.mixup_alpha == 0 and cfg.optim.weight_decay == 0
    keys, points = grid(name)
    assert sorted({p[keys.index("seed")] for p in points}) == ["0", "1", "2"]


def test_civitelli_cifar10_grids_hold_the_papers_curves():
    """Fig. 3 / Fig. 7: BatchNorm, and IdShort, LearnScalar, ConvShort with He fan-out and Brock."""
    for m in ("18", "50", "101"):
        keys, points = grid(f"civitelli_cifar10_resnet{m}")
        combos = {(p[keys.index("init")], p[keys.index("init.weights")]) for p in points}
        for scheme in ("idshort", "learnscalar", "convshort"):
            assert {(scheme, "null"), (scheme, "brock")} <= combos
        assert ("bn", "null") in combos
        assert len(points) == len(combos) * 3


def test_fixup_cifar10_recipe():
    """docs/science.md#recipe-fixup and hongyi-zhang/Fixup cifar_train.py: ResNet-110, lr 0.1, batch 128, 200 epochs,
    wd 1e-4, lr /10 at 100 and 150, mixup 1.0, scalars at lr/10, the reference block."""
    cfg = preset("fixup_cifar10_resnet110")
    assert (cfg.model.name, cfg.init.name, cfg.init.reference_block) == ("resnet110", "fixup", True)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.scalar_lr_mult) == (0.1, 0.9, 1e-4, 0.1)
    assert (cfg.data.batch_size, cfg.trainer.epochs, cfg.trainer.mixup_alpha) == (128, 200, 1.0)
    assert (cfg.sched.name, list(cfg.sched.milestones), cfg.sched.gamma) == ("multistep", [100, 150], 0.1)


def test_he_cifar10_recipe():
    """docs/science.md#he-cifar-resnet and #recipe-he2016a, He et al. 2016a section 4.2: their ResNet-20
    (post-activation, option A) with
    BatchNorm and He et al. 2015's init drawn without Civitelli et al.'s standardisation, per-pixel mean
    subtraction (no std), SGD lr 0.1, momentum 0.9, wd 1e-4, batch 128, crop 32 pad 4 + flip, lr / 10 at
    epochs 82 and 123 of 164 (390 steps each: 31,980 / 47,970 / 63,960 iterations, for 32k / 48k / 64k)."""
    cfg = preset("he_cifar10_resnet20")
    assert (cfg.data.name, cfg.model.name, cfg.model.width) == ("cifar10", "he_resnet20", None)
    assert (cfg.init.name, cfg.init.weights, cfg.init.standardize, cfg.init.conv_shortcut) == (
        "bn",
        "he_fanin",
        False,
        False,
    )
    assert cfg.data.pixel_mean and cfg.data.mean is None and cfg.data.std is None and cfg.data.image_size is None
    assert (cfg.data.crop_padding, cfg.data.hflip, cfg.data.randaugment, cfg.data.val_size) == (4, True, False, None)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (0.1, 0.9, False, 1e-4)
    assert cfg.data.batch_size == 128 and cfg.trainer.mixup_alpha == 0 and cfg.trainer.label_smoothing == 0
    assert (cfg.sched.name, cfg.sched.per_step, list(cfg.sched.milestones), cfg.sched.gamma) == (
        "multistep",
        False,
        [82, 123],
        0.1,
    )
    steps = 50_000 // 128
    assert (steps, 82 * steps, 123 * steps, cfg.trainer.epochs * steps) == (390, 31_980, 47_970, 63_960)
    keys, points = grid("he_cifar10_resnet20")
    assert keys == ["seed"] and [p[0] for p in points] == ["0", "1", "2"]


def test_he_cifar10_preset_starts_he_et_al_network_unstandardised(make_cfg):
    """The preset's network is He et al.'s 269,722-parameter ResNet-20, its convs drawn N(0, 2/n_in) and left
    as drawn (no empirical standardisation: the layer variances differ from 2/n_in)."""
    import torch
    from torch import nn

    from nfbench.models import PostActivationBasicBlock

    torch.manual_seed(0)
    net = validate(make_cfg(["experiment=he_cifar10_resnet20"])).build(10, 3, 32)
    assert sum(p.numel() for p in net.parameters()) == 269_722
    assert all(isinstance(b, PostActivationBasicBlock) for b in net.blocks)
    ratios = [
        m.weight.var(unbiased=False).item() * m.weight[0].numel() / 2 for m in net.modules() if isinstance(m, nn.Conv2d)
    ]
    assert all(0.7 < r < 1.3 for r in ratios) and not any(abs(r - 1) < 1e-6 for r in ratios)


def test_fixup_imagenet_recipe():
    """docs/science.md#recipe-fixup: 90 epochs, batch 256, lr 0.1 x 256/256, wd 1e-4, mixup 0.7, /10 every 30 epochs."""
    cfg = preset("fixup_imagenet_resnet50")
    assert (cfg.data.name, cfg.model.name, cfg.init.name) == ("imagenet", "resnet50", "fixup")
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.scalar_lr_mult) == (0.1, 1e-4, 0.1)
    assert (cfg.data.batch_size, cfg.trainer.epochs, cfg.trainer.mixup_alpha) == (256, 90, 0.7)
    assert (cfg.sched.name, list(cfg.sched.milestones), cfg.sched.gamma) == ("multistep", [30, 60], 0.1)


def test_other_papers_build_their_models():
    assert preset("skipinit_rezero_cifar10").init.name == "skipinit"
    keys, points = grid("skipinit_rezero_cifar10")
    assert {p[keys.index("model")] for p in points} == {"resnet56", "resnet110"}
    assert {p[keys.index("init")] for p in points} >= {"skipinit", "rezero"}
    nf = preset("nf_resnet50_imagenet")
    assert (nf.data.name, nf.model.name, nf.init.name) == ("imagenet", "nf_resnet50", "nf")
    wn = preset("arpit_wn_cifar10_wrn")
    assert (wn.model.name, wn.model.depth, wn.model.widen, wn.init.name) == ("wrn", 40, 2, "wn")
    assert wn.data.val_size == 0.1  # the reference's hold-out for model selection (src/data/loaders.py)
