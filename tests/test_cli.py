"""The nfbench command: its help, Hydra's facilities behind every command, and error reporting."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing

from nfbench.cli.main import COMMANDS
from nfbench.config import OPTION_SCHEMAS, Config
from nfbench.engine.hooks import HOOKS
from nfbench.loggers import LOGGERS


def nfbench(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nfbench.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_help_lists_the_commands():
    out = nfbench("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert f"  {name}" in out.stdout
    assert "train" in COMMANDS


def test_unknown_command_is_an_error():
    out = nfbench("trian")
    assert out.returncode == 2 and "unknown command 'trian'" in out.stderr and "train" in out.stderr


def test_hydra_cfg_job_prints_the_composed_config():
    out = nfbench("train", "--cfg", "job", "model=resnet50", "init=convshort", "data=cifar100")
    assert out.returncode == 0, out.stderr
    assert "name: resnet50" in out.stdout and "name: convshort" in out.stdout and "name: cifar100" in out.stdout


def test_hydra_help_shows_groups():
    out = nfbench("train", "--help")
    assert out.returncode == 0
    for group in ("data:", "model:", "init:", "optim:", "sched:", "trainer:", "experiment:"):
        assert group in out.stdout


def schema_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every leaf key of the schema, dotted (the logger options' keys and each option's own included)."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        nested = [t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)]
        keys += schema_keys(nested[0], f"{prefix}{f.name}.") if nested else [prefix + f.name]
        for option in OPTION_SCHEMAS.get(f.name, {}).values() if not prefix else ():
            keys += [k for k in schema_keys(option, f"{f.name}.") if k not in keys]
    if not prefix:  # every registered logger's and hook's keys
        for group, registry in (("logger", LOGGERS), ("hooks", HOOKS)):
            for name in registry.names():
                keys += schema_keys(registry.get(name).config, f"{group}.{name}.")
    return keys


def test_train_help_explains_every_key_with_this_configs_value():
    out = nfbench("train", "data=cifar10", "optim.lr=0.05", "--help")
    assert out.returncode == 0, out.stderr
    assert "residual network" in out.stdout
    assert "init: bn, bn_conv_shortcut, convshort, fixup, fixup_reference, idshort" in out.stdout  # Hydra's list
    lines = {line.split("=", 1)[0].strip(): line for line in out.stdout.splitlines() if line.startswith("  ")}
    keys = schema_keys()
    assert len(keys) > 80 and "logger.wandb.mode" in keys and {"init.alpha", "model.depth"} <= set(keys)
    for key in keys:
        assert key in lines, f"{key} is not in nfbench train --help"
        assert len(lines[key].split(maxsplit=1)) == 2, f"{key} has no meaning in nfbench train --help"
    # Values are the composed config's (data=cifar10's workers, the override), meanings the schema's comments.
    assert lines["data.num_workers"].split()[0] == "data.num_workers=4"
    assert lines["optim.lr"].split()[0] == "optim.lr=0.05"
    assert "training images per optimiser step" in lines["data.batch_size"]
    assert "checkpoint or a run directory" in lines["trainer.resume"]
    assert "$NFBENCH_DATA" in lines["data.root"]
    assert lines["logger.wandb.mode"].split()[0] == "logger.wandb.mode=null"


def test_bad_value_fails_before_training(tmp_path):
    out = nfbench("train", "optim.lr=-1", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    assert "optim.lr=-1" in out.stderr and "must be > 0" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_shell_completion_completes_overrides_after_the_command():
    out = nfbench("-sc", "query=bash", env={"COMP_LINE": "nfbench train init=conv", "COMP_POINT": "23"})
    assert out.returncode == 0, out.stderr
    assert "init=convshort" in out.stdout.split()


def test_multirun_sweeps_seeds(tmp_path):
    """`-m seed=0,1` lays out one complete run directory per job."""
    out = nfbench(
        "train",
        "-m",
        "seed=0,1",
        "model.width=4",
        "trainer.epochs=1",
        "data.train_subset=128",
        "data.test_subset=64",
        "trainer.progress=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2
    for run in runs:
        assert (run / "result.json").exists() and (run / "checkpoints" / "last.pt").exists()


def test_an_invalid_sweep_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    """Job 0 (warmup as long as the run) is invalid; job 1 still trains; the report lists job 0."""
    sweep = tmp_path / "sweep"
    out = nfbench(
        "train",
        "-m",
        "trainer.epochs=2,3",
        "sched.warmup_epochs=2",
        "model.width=4",
        "data.train_subset=128",
        "data.test_subset=64",
        "trainer.progress=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "nfbench: error: 1 of 2 sweep points invalid" in out.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name[0] for p in jobs] == ["0", "1"]
    invalid = json.loads((jobs[0] / "result.json").read_text())
    assert invalid["status"] == "invalid"
    assert "sched.warmup_epochs=2.0" in invalid["error"] and "trainer.epochs=2" in invalid["error"]
    assert not (jobs[0] / "checkpoints").exists()
    finished = json.loads((jobs[1] / "result.json").read_text())
    assert finished["status"] == "finished" and finished["epochs"] == 3
    # The keys the report groups on, as the point that ran records them.
    keys = ("data", "model", "init", "weights", "seed", "experiment")
    assert {k: invalid[k] for k in keys} == {k: finished[k] for k in keys}
    assert (invalid["data"], invalid["model"], invalid["init"], invalid["seed"]) == (
        "digits",
        "resnet20",
        "convshort",
        0,
    )

    report = nfbench("report", str(sweep), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    table = report.stdout.splitlines()
    head = [c.strip() for c in table[0].strip("|").split("|")]
    cells = dict(zip(head, (c.strip() for c in table[2].strip("|").split("|"))))
    assert (cells["seeds"], cells["invalid"], cells["epochs"]) == ("1", "1", "3")
    assert f"Invalid: {jobs[0]}: {invalid['error']}" in report.stdout
