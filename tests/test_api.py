"""The Python API (issue 24 item 4) and the registries behind every axis a user extends (item 3): one
registration and one listing each, and the config group of each axis holds exactly its registered names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nfbench
from nfbench.errors import ConfigError
from tests.conftest import TINY

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_import_nfbench_loads_no_torch_until_asked():
    code = "import sys, nfbench; print('torch' in sys.modules, set(nfbench.__all__) <= set(dir(nfbench)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_create_model_is_the_model_training_builds():
    """Civitelli et al. Table 1: ConvShort's ResNet-50 has 38.02 M parameters (38,016,714, tests/test_summary.py)."""
    net = nfbench.create_model("resnet50", init="convshort")
    assert sum(p.numel() for p in net.parameters()) == 38_016_714
    torch.manual_seed(3)
    a = nfbench.create_model("resnet20", init="idshort", width=4, weights="brock")
    torch.manual_seed(3)
    from nfbench.config import option_config
    from nfbench.models import build_model
    from nfbench.schemes import build_scheme

    b = build_model(
        option_config("model", "resnet20", width=4),
        build_scheme(option_config("init", "idshort", weights="brock")),
        10,
        3,
        32,
    )
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    nf = nfbench.create_model("resnet20", init="nf", alpha=0.1, width=4)
    assert nf.blocks[0].gate.alpha == 0.1


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: nfbench.create_model("resnet7"), "unknown model 'resnet7'; choose one of"),
        (lambda: nfbench.create_model("resnet20", init="convshrt"), "unknown init scheme 'convshrt'"),
        (lambda: nfbench.create_model("resnet20", alpha=0.1), r"has no key alpha"),
        (lambda: nfbench.create_model("nf_resnet26", init="bn"), "use init=nf with it"),
    ],
)
def test_create_model_refuses_as_the_command_does(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_listings_are_the_registries():
    from nfbench.data.sets import DATASETS
    from nfbench.engine.hooks import HOOKS
    from nfbench.loggers import LOGGERS
    from nfbench.models import MODELS
    from nfbench.schemes import SCHEMES

    assert nfbench.list_models() == MODELS.names() and "he_resnet20" in nfbench.list_models()
    assert nfbench.list_models("resnet*") == [n for n in MODELS.names() if n.startswith("resnet")]
    assert nfbench.list_schemes() == SCHEMES.names() and "convshort" in nfbench.list_schemes()
    assert nfbench.list_datasets() == DATASETS.names() == ["cifar10", "cifar100", "digits", "imagefolder", "imagenet"]
    assert nfbench.list_loggers() == LOGGERS.names() == ["csv", "tensorboard", "wandb"]
    assert nfbench.list_hooks() == HOOKS.names()


# Option files that are variants of a registered name (another option's keys set), and "none".
VARIANTS = {"init": {"bn_conv_shortcut", "fixup_reference"}, "logger": {"none"}, "hooks": {"none"}}


@pytest.mark.parametrize(
    "group,listing",
    [
        ("model", nfbench.list_models),
        ("init", nfbench.list_schemes),
        ("data", nfbench.list_datasets),
        ("logger", nfbench.list_loggers),
        ("hooks", nfbench.list_hooks),
    ],
)
def test_each_config_group_holds_exactly_its_registry(group, listing):
    options = {p.stem for p in (CONF / group).glob("*.yaml")} - VARIANTS.get(group, set())
    assert sorted(options) == listing()


def test_train_from_python_returns_the_metrics_and_the_run_loads_back(tmp_path):
    metrics = nfbench.train([*TINY, "trainer.epochs=1", "logger=none"], run_dir=tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert metrics["run_dir"] == str(tmp_path / "run")
    assert {k: v for k, v in metrics.items() if k != "run_dir"} == result and result["status"] == "finished"
    net, cfg = nfbench.load_run(metrics["run_dir"])
    assert cfg.model.width == 4 and not net.training
    again = nfbench.train(nfbench.compose([*TINY, "trainer.epochs=1", "logger=none"]), run_dir=tmp_path / "run")
    assert again["test_top1"] == metrics["test_top1"]  # a rerun of a finished run: its result, kept


def test_the_readmes_api_example_runs_as_written(tmp_path, monkeypatch):
    """The README's Python API block, executed as it stands (in a scratch directory): a model, a run, its load."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 10  # the "10-line example"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["metrics"]["status"] == "finished" and scope["metrics"]["epochs"] == 1
    assert sum(p.numel() for p in scope["net"].parameters()) == 38_016_714
    assert (tmp_path / "outputs" / "api-example" / "result.json").exists()
    assert not scope["model"].training
