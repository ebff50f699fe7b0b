"""Tuning with Hydra's sweepers: the number `nfbench train` returns (optimized_metric), and a real
Optuna search on the digits (hydra-optuna-sweeper, the nfbench[tune] extra)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import yaml

from nfbench import rundir
from nfbench.cli.objective import WORST, objective
from nfbench.engine.loop import train
from nfbench.engine.validation import validate
from nfbench.errors import ConfigError
from tests.conftest import TINY
from tests.test_cli import nfbench

needs_optuna = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
    reason="needs hydra-optuna-sweeper: pip install 'nfbench[tune]'",
)

FINISHED = {
    "status": "finished",
    "val_top1": 40.0,
    "val_top5": 90.0,
    "best_val_top1": 45.0,
    "test_top1": 60.0,
    "test_top5": 95.0,
}


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], 60.0),  # no validation split: the test top-1
        (["data.val_size=64"], 40.0),  # a validation split: its final top-1
        (["data.val_size=64", "optimized_metric=best_val_top1"], 45.0),
        (["optimized_metric=test_top5"], 95.0),
    ],
)
def test_objective_picks_the_configured_metric(make_cfg, overrides, expected):
    cfg = make_cfg([*TINY, *overrides])
    validate(cfg)
    assert objective(cfg, FINISHED) == expected


@pytest.mark.parametrize(
    "result",
    [
        None,  # an invalid sweep point
        {**FINISHED, "status": "diverged"},  # its last good epoch's figures do not count
        {"status": "finished", "test_top1": None},  # a missing figure
        {"status": "finished", "test_top1": float("nan")},
    ],
)
def test_a_run_without_its_figure_returns_the_worst_value(make_cfg, result):
    assert objective(make_cfg(TINY), result) == WORST == 0.0


def test_train_returns_the_validation_top1_it_wrote(make_cfg, tmp_path):
    cfg = make_cfg([*TINY, "trainer.epochs=1", "data.val_size=64"], tmp_path)
    value = objective(cfg, train(cfg))
    written = rundir.read_json(tmp_path / "result.json")
    assert written["status"] == "finished" and value == written["val_top1"]


def test_a_diverged_training_returns_the_worst_value(make_cfg, tmp_path, caplog):
    cfg = make_cfg([*TINY, "init=plain", "optim.lr=1e6"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="nfbench"):
        value = objective(cfg, train(cfg))
    assert rundir.read_json(tmp_path / "result.json")["status"] == "diverged"
    assert value == WORST
    assert any("the sweeper gets 0.0" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimized_metric=val_top1"], "needs a validation split: set data.val_size"),
        (["optimized_metric=best_val_top1"], "needs a validation split: set data.val_size"),
    ],
)
def test_impossible_optimized_metric_is_refused(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match="optimized_metric") as e:
        validate(make_cfg([*TINY, *overrides]))
    assert message in str(e.value)


def test_an_unknown_optimized_metric_is_refused_by_hydra(make_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        make_cfg([*TINY, "optimized_metric=test_loss"])
    assert "expected one of [val_top1, val_top5, best_val_top1, test_top1, test_top5]" in str(e.value.__cause__)


def test_a_resume_may_change_the_optimized_metric():
    """It picks the figure handed to the sweeper, not the trajectory: a rerun of a finished trial
    under another objective continues its run directory."""
    old = {"data": {"name": "digits", "val_size": 64}, "optimized_metric": None}
    assert rundir.config_changes(old, {**old, "optimized_metric": "best_val_top1"}) == {}


def trials(sweep: Path) -> list[tuple[dict, dict]]:
    """(config.yaml, result.json) of each trial's run directory."""
    return [
        (yaml.safe_load((run / "config.yaml").read_text()), rundir.read_json(run / "result.json"))
        for run in sorted(sweep.iterdir())
        if run.is_dir()
    ]


TINY_SEARCH = [
    "data=digits",
    "data.train_subset=512",
    "data.test_subset=128",
    "data.batch_size=32",
    "model.width=4",
    "trainer.epochs=2",
    "trainer.progress=false",
    "hydra.sweeper.n_trials=3",
]


@needs_optuna
def test_lr_search_preset_finds_the_best_trial(tmp_path):
    """experiment=lr_search, made tiny: 3 TPE trials over lr and weight decay, told the validation
    top-1; the study persists in SQLite (the storage that needs SQLAlchemy < 2 under Optuna 2.x)."""
    sweep = tmp_path / "sweep"
    out = nfbench(
        "train",
        "-m",
        "experiment=lr_search",
        "init=convshort",
        *TINY_SEARCH,
        "optim.lr=tag(log, interval(0.01, 0.5))",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
        f"hydra.sweep.dir={sweep}",
    )
    assert out.returncode == 0, out.stderr
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    runs = trials(sweep)
    assert len(runs) == 3 and all(result["status"] == "finished" for _, result in runs)
    assert all(
        0.01 <= config["optim"]["lr"] <= 0.5 and 1e-6 <= config["optim"]["weight_decay"] <= 1e-3 for config, _ in runs
    )
    best = [
        result
        for config, result in runs
        if config["optim"]["lr"] == found["best_params"]["optim.lr"]
        and config["optim"]["weight_decay"] == found["best_params"]["optim.weight_decay"]
    ]
    assert len(best) == 1
    assert found["best_value"] == best[0]["val_top1"] == max(result["val_top1"] for _, result in runs)
    assert (tmp_path / "study.db").exists()
    assert "a test-set figure" not in out.stdout + out.stderr


@needs_optuna
def test_optuna_on_the_command_line_tells_an_invalid_point_the_worst_value(tmp_path):
    """hydra/sweeper=optuna without experiment=lr_search nor a validation split: the objective is the
    test top-1, with a warning; of the grid's two points, warmup as long as the run is invalid: the
    study holds 0.0 for it, the search goes on, and nfbench exits 2 once it is over."""
    import optuna

    sweep = tmp_path / "sweep"
    storage = f"sqlite:///{tmp_path}/study.db"
    out = nfbench(
        "train",
        "-m",
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.study_name=grid",
        f"hydra.sweeper.storage={storage}",
        *TINY_SEARCH[:-1],
        "sched.warmup_epochs=choice(0,2)",
        f"hydra.sweep.dir={sweep}",
    )
    assert out.returncode == 2 and "nfbench: error: 1 of 2 sweep points invalid" in out.stderr, out.stderr
    assert "the sweeper optimises test_top1, a test-set figure" in out.stdout + out.stderr
    results = {
        run.name.split("sched.warmup_epochs=")[1][0]: rundir.read_json(run / "result.json")
        for run in sweep.iterdir()
        if run.is_dir()
    }
    assert results["2"]["status"] == "invalid" and results["0"]["status"] == "finished"
    study = optuna.load_study(study_name="grid", storage=storage)
    told = {t.params["sched.warmup_epochs"]: t.value for t in study.trials}
    assert told == {2: WORST, 0: results["0"]["test_top1"]}
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert found["best_params"] == {"sched.warmup_epochs": 0} and found["best_value"] == results["0"]["test_top1"]
