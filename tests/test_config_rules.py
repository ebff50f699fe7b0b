"""Issue 14: each configuration rule has one home.  Option-specific keys live in their option's schema
(Hydra refuses them under another option), and each remaining rule is applied once, where the object
it guards is built, before any data loads; every entry point goes through that one place."""

from __future__ import annotations

from pathlib import Path

import pytest

import nfbench.models
import nfbench.schemes
from nfbench import rundir
from nfbench.config import NFInitConfig, WideResNetConfig, option_config, plain, typed
from nfbench.engine.validation import validate
from nfbench.errors import ConfigError
from tests.conftest import TINY

# TINY without its model, for the tests that choose one.
TINY_DATA = [o for o in TINY if not o.startswith("model=")]
COMMITTED_RUN = Path(__file__).resolve().parents[1] / "docs" / "results-cifar10-gpu" / "runs" / "he_cifar10_resnet20"


class Sentinel(ConfigError):
    """Raised by a patched rule: whoever surfaces it went through that rule."""


def counting(monkeypatch, obj, name: str) -> list:
    """Replace ``obj.name`` by a wrapper that records each call, and return the record."""
    calls: list = []
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)
    return calls


def test_a_run_builds_its_scheme_and_plans_its_model_once(make_cfg, tmp_path, monkeypatch):
    """validate() builds the scheme and plans the model; training builds the network from that plan,
    so neither the scheme nor the pairing rules run a second time (they did: validation, then training)."""
    from nfbench.cli import main as cli

    schemes = counting(monkeypatch, nfbench.schemes.SCHEMES.get("bn"), "__init__")
    plans = counting(monkeypatch, nfbench.models, "plan_model")
    cfg = make_cfg([*TINY, "init=bn", "trainer.epochs=1", "logger=none"], run_dir=tmp_path / "run")
    cli._validated_train(cfg)  # the nfbench command's path: validate, then train
    assert (len(schemes), len(plans)) == (1, 1)
    assert (tmp_path / "run" / "result.json").exists()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=wrn", "model.depth=12"], "model.depth=12 is not allowed"),
        (["model=wrn", "model.widen=0"], "model.widen=0 is not allowed"),
        (["model=resnet50", "init=fixup_reference"], "has no basic blocks"),
        (["model=nf_resnet26", "init=bn"], "use init=nf"),
        (["init=nf", "init.alpha=-1"], "init.alpha=-1.0 is not allowed"),
        (["init=nf", "init.weights=he_fanin"], "not allowed with init=nf"),
        (["model.name=resnet7"], "unknown model 'resnet7'"),
    ],
)
def test_every_rule_refuses_before_any_data_loads(make_cfg, tmp_path, monkeypatch, overrides, message):
    """The rules applied where scheme and model are built still come before the data set is opened."""
    import nfbench.engine.loop

    def no_data(*args, **kwargs):
        raise AssertionError("the data set was loaded before the config was refused")

    monkeypatch.setattr(nfbench.engine.loop, "build_source", no_data)
    with pytest.raises(ConfigError, match=message):
        nfbench.engine.loop.train(make_cfg([*TINY_DATA, *overrides], run_dir=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_the_wrn_rule_has_one_home_that_every_entry_point_uses(make_cfg, monkeypatch, tmp_path):
    """Patch wrn_spec, the one place of the WRN depth and widen rules, to refuse with its own error:
    validation, `nfbench summary`, `nfbench spp` and training all surface the patched refusal for a
    depth the rule forbids, so none checks depth on its own first."""
    import nfbench.engine.loop
    from nfbench.analysis.spp import run_spp
    from nfbench.analysis.summary import summarize

    def refuse(depth: int, widen: int):
        raise Sentinel(f"patched rule for WRN-{depth}-{widen}")

    monkeypatch.setattr(nfbench.models, "wrn_spec", refuse)
    cfg = make_cfg([*TINY_DATA, "model=wrn", "model.depth=12", "model.widen=0"], run_dir=tmp_path / "run")
    for entry in (validate, summarize, run_spp, nfbench.engine.loop.train):
        with pytest.raises(Sentinel, match="WRN-12-0"):
            entry(cfg)


def test_the_weight_rule_has_one_resolution(monkeypatch, tmp_path):
    """init.weights is resolved by schemes.weight_rule alone: the scheme's ``weights`` (the run's log,
    result.json, spp.csv, summary) and the report's grouping of a run without a result read it."""
    from nfbench.analysis import report

    monkeypatch.setattr(nfbench.schemes, "weight_rule", lambda name, weights: f"patched-{name}")
    assert nfbench.schemes.build_scheme(option_config("init", "idshort")).weights == "patched-idshort"
    run = report.Run(tmp_path, {"init": {"name": "plain", "weights": None}}, [], None)
    assert report.resolved_weights(run) == "patched-plain"


def test_option_keys_are_their_options_own():
    """The keys that apply to one option are fields of that option's schema alone."""
    assert option_config("init", "nf", alpha=0.1).alpha == 0.1 and isinstance(option_config("init", "nf"), NFInitConfig)
    assert not hasattr(option_config("init", "bn"), "alpha")
    assert not hasattr(option_config("init", "idshort"), "reference_block")
    assert isinstance(option_config("model", "wrn"), WideResNetConfig)
    assert not hasattr(option_config("model", "resnet18"), "depth")


def test_help_lists_each_options_keys_under_it():
    from nfbench.cli.help import keys_help

    text = keys_help()
    nf = text[text.index("init=nf only:") :]
    assert "init.alpha=0.2" in nf.split("\n\n")[0] and "init.skip_gain=0.0" in nf.split("\n\n")[0]
    assert "model.depth=28" in text[text.index("model=wrn only:") :].split("\n\n")[0]
    assert "init.reference_block=false" in text[text.index("init=fixup only:") :].split("\n\n")[0]


def test_a_committed_run_of_the_old_layout_loads_typed():
    """Runs written before option-specific keys hold every option's keys, null or false where they did
    not apply: typed() leaves those out, so load_run and a resume read them under the new schema."""
    tree = rundir.read_config(COMMITTED_RUN)
    assert tree["init"]["alpha"] is None and tree["model"]["depth"] is None  # the old layout
    cfg = typed(tree)
    assert cfg.init.name == "bn" and "alpha" not in cfg.init and "reference_block" not in cfg.init
    assert "depth" not in cfg.model and cfg.trainer.precision == "fp32"
    validate(cfg)


def test_a_set_key_of_another_option_is_not_dropped_silently():
    """Only the old layout's unset values are left out: a value that did something is refused."""
    from omegaconf.errors import ConfigKeyError

    tree = rundir.read_config(COMMITTED_RUN)
    tree["init"]["alpha"] = 0.3
    with pytest.raises(ConfigKeyError, match="alpha"):
        typed(tree)


def test_resume_compares_option_keys_with_the_selected_options_defaults(make_cfg):
    """A checkpoint of the old layout (every option's keys, null where unused) resumes under the new
    one unchanged; a key the checkpoint lacks counts as changed only if it differs from the default
    of the option's own schema."""
    new = plain(make_cfg(["init=nf"]))
    old = {
        **new,
        "init": {**new["init"], "reference_block": False},
        "model": {**new["model"], "depth": None, "widen": None},
    }
    assert rundir.config_changes(old, new) == {}
    without_alpha = {**new, "init": {k: v for k, v in new["init"].items() if k != "alpha"}}
    assert rundir.config_changes(without_alpha, new) == {}
    assert rundir.config_changes(without_alpha, plain(make_cfg(["init=nf", "init.alpha=0.3"]))) == {
        "init.alpha": (0.2, 0.3)
    }
