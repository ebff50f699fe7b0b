"""Every config file composes, and impossible values fail before training with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from nfbench.cli.main import CONF_DIR
from nfbench.engine.validation import validate
from nfbench.errors import ConfigError

GROUPS = ["data", "model", "init", "optim", "sched", "trainer"]


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_group_file_composes_and_validates(make_cfg, group, option):
    overrides = [f"{group}={option}"]
    if option == "imagefolder":
        overrides.append("data.root=/nonexistent")  # the only mandatory value
    if option.startswith("nf_resnet"):
        overrides.append("init=nf")  # timm's NF-ResNets are built with the nf scheme only
    if option.startswith("he_resnet"):
        overrides.append("init=bn")  # He et al. 2016a's network has its BatchNorm built in
    cfg = make_cfg(overrides)
    if group != "trainer":
        # A variant file names the option it varies (init=fixup_reference: name fixup).
        assert cfg[group].name == OmegaConf.load(Path(CONF_DIR) / group / f"{option}.yaml").get("name", option)
    validate(cfg)


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_file_composes_and_validates(make_cfg, experiment):
    cfg = make_cfg([f"experiment={experiment}"])
    assert cfg.experiment == experiment
    validate(cfg)


def test_experiment_group_exists():
    assert "quickstart" in group_options("experiment")


@pytest.mark.parametrize(
    "override,key,allowed",
    [
        ("optim.lr=-1", "optim.lr", "> 0"),
        ("optim.lr=0", "optim.lr", "> 0"),
        ("trainer.epochs=0", "trainer.epochs", ">= 1"),
        ("data.batch_size=0", "data.batch_size", ">= 1"),
        ("optim.momentum=1.5", "optim.momentum", "[0, 1)"),
        ("trainer.label_smoothing=1.0", "trainer.label_smoothing", "[0, 1)"),
        ("trainer.device=tpu", "trainer.device", "cuda"),
        ("sched.milestones=[150,100]", "sched.milestones", "increasing"),
        ("trainer.compile_mode=fast", "trainer.compile_mode", "reduce-overhead"),
        ("trainer.compile_mode=reduce-overhead", "trainer.compile_mode", "trainer.compile=true only"),
        ("data.in_memory_max_gb=-1", "data.in_memory_max_gb", ">= 0"),
    ],
)
def test_bad_values_name_key_and_range(make_cfg, override, key, allowed):
    cfg = make_cfg([override])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert key in msg and allowed in msg, msg


@pytest.mark.parametrize(
    "override,kind,known",
    [
        ("model.name=resnet7", "model", "resnet18"),
        ("init.name=convshrt", "init scheme", "convshort"),
        ("data.name=mnist", "data set", "cifar10"),
    ],
)
def test_unknown_names_list_the_known_ones(make_cfg, override, kind, known):
    with pytest.raises(ConfigError) as e:
        validate(make_cfg([override]))
    msg = str(e.value)
    assert f"unknown {kind}" in msg and known in msg and "choose one of" in msg, msg


@pytest.mark.parametrize(
    "override,key,allowed",
    [
        ("trainer.precision=fp8", "trainer.precision", "fp32, bf16, fp16"),
        ("sched.name=linear", "sched.name", "cosine, multistep, constant"),
        ("init.weights=xavier", "init.weights", "he_fanin, he_fanout, brock"),
        ("model.stem=tiny", "model.stem", "auto, cifar, imagenet"),
        ("spp.input=noise", "spp.input", "gaussian, data"),
        ("spp.labels=true", "spp.labels", "random, data"),
        ("spp.formats=[png,gif]", "spp.formats", "png, pdf, svg"),
        ("optim.name=adam", "optim.name", "sgd"),
        ("optimized_metric=loss", "optimized_metric", "val_top1, val_top5, best_val_top1, test_top1, test_top5"),
    ],
)
def test_a_value_outside_a_closed_set_fails_at_composition(make_cfg, override, key, allowed):
    """Closed sets are enums of the schema: Hydra refuses any other value, naming the key and the members."""
    with pytest.raises(ConfigCompositionException) as e:
        make_cfg([override])
    cause = str(e.value.__cause__)
    assert f"full_key: {key}" in cause and f"expected one of [{allowed}]" in cause, cause


def test_closed_sets_are_plain_strings_in_the_run_files(make_cfg):
    """A member compares, hashes and prints as its string, and the run files hold the string: committed
    run files, old checkpoints' configs and result.json read the same as before the enums."""
    import json

    from nfbench.config import plain

    cfg = make_cfg(["trainer.precision=bf16", "init.weights=brock", "spp.formats=[pdf,svg]"])
    assert cfg.trainer.precision == "bf16" and {"bf16": 1}[cfg.trainer.precision] == 1
    assert f"{cfg.trainer.precision}|{cfg.init.weights}" == "bf16|brock" and repr(cfg.init.weights) == "'brock'"
    tree = plain(cfg)
    assert type(tree["trainer"]["precision"]) is str and type(tree["spp"]["formats"][0]) is str
    assert json.loads(json.dumps(tree))["init"]["weights"] == "brock"
    assert "precision: bf16\n" in OmegaConf.to_yaml(cfg) and "- pdf\n" in OmegaConf.to_yaml(cfg)


def test_wrong_type_fails_at_composition(make_cfg):
    with pytest.raises(ConfigCompositionException, match="trainer.epochs"):
        make_cfg(["trainer.epochs=ten"])


def test_unknown_key_fails_at_composition(make_cfg):
    with pytest.raises(ConfigCompositionException, match="trainer.epoch"):
        make_cfg(["trainer.epoch=3"])


def test_data_root_defaults_to_environment(make_cfg, monkeypatch):
    monkeypatch.setenv("NFBENCH_DATA", "/datasets/here")
    assert OmegaConf.to_container(make_cfg([]), resolve=True)["data"]["root"] == "/datasets/here"
    monkeypatch.delenv("NFBENCH_DATA")
    assert OmegaConf.to_container(make_cfg([]), resolve=True)["data"]["root"] == "data"
