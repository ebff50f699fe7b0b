"""The ``nfbench`` commands that README.md and docs/*.md show run as written and give the numbers the docs
print beside them, so the docs cannot drift from the code.

Every command the docs show (in a code block, or inline in backticks) must be classified here: RUN
(run as written through the real CLI, and its output checked), COMPOSE (a training command: its
composed config, ``--cfg job``, checked against the recipe the docs state; a sweep's first point) or
SKIP (with the reason it is not run: data, GPU, minutes, or a synopsis with placeholders).  A new
command in the docs fails :func:`test_every_documented_command_is_classified` until it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from nfbench.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)


def _clean(command: str) -> str:
    """One command: no trailing comment or shell loop end, single spaces."""
    command = re.split(r"\s#\s", command)[0]
    return " ".join(command.replace("; done", "").split())


def documented_commands() -> set[str]:
    """Every ``nfbench ...`` command of the docs: lines of code blocks (continuation lines joined)
    and inline code spans."""
    found = set()
    for doc in DOCS:
        text = doc.read_text()
        for block in FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                match = re.search(r"(?:^|\s)(nfbench(?:\s.*)?)$", line)
                if match:
                    found.add(_clean(match.group(1)))
        found |= {_clean(span) for span in re.findall(r"`(nfbench(?:\s[^`]*)?)`", FENCE.sub("", text))}
    return found


def nfbench(args: list[str], capsys) -> tuple[int, str]:
    """The real ``nfbench`` entry point, in this process: exit code and everything printed.  Hydra's
    global config is cleared afterwards, so no later test runs under this command's job."""
    from hydra.core.hydra_config import HydraConfig

    try:
        cli.main(args)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        HydraConfig.instance().cfg = None
    out = capsys.readouterr()
    return code, out.out + out.err


def first_point(command: str) -> list[str]:
    """A training command as a single run: without -m, each swept key at its first value."""
    args = [a for a in command.split()[1:] if a not in ("-m", "--multirun")]
    return [
        a if "=" not in a or "(" in a else a.split("=", 1)[0] + "=" + a.split("=", 1)[1].split(",")[0] for a in args
    ]


# ---------------------------------------------------------------------------------------------
# Training commands: the composed config holds the recipe the docs state next to them.
# ---------------------------------------------------------------------------------------------
DEFAULT_RECIPE = {"trainer.epochs": 10, "data.randaugment": False, "optim.lr": 0.01, "data.batch_size": 128}
CIVITELLI_RECIPE = {
    "trainer.epochs": 200,
    "data.randaugment": True,
    "data.randaugment_n": 2,
    "data.randaugment_m": 9,
    "optim.lr": 0.01,
    "data.batch_size": 128,
}

COMPOSE: dict[str, dict[str, Any]] = {
    # README: the headline command, "10 epochs, SGD lr 0.01, batch 128, crop + flip, no RandAugment" ...
    "nfbench train model=resnet50 init=convshort data=cifar100": {
        **DEFAULT_RECIPE,
        "data.name": "cifar100",
        "model.name": "resnet50",
        "init.name": "convshort",
    },
    # ... and the preset that gives the paper's.
    "nfbench train experiment=civitelli_cifar100_resnet50": {
        **CIVITELLI_RECIPE,
        "data.name": "cifar100",
        "model.name": "resnet50",
        "init.name": "convshort",
    },
    "nfbench train experiment=quickstart": {"data.name": "digits", "model.name": "resnet20", "init.name": "convshort"},
    "nfbench train model=resnet18 init=convshort data=cifar10 trainer.epochs=200": {
        "trainer.epochs": 200,
        "data.name": "cifar10",
        "model.name": "resnet18",
    },
    "nfbench train model=resnet50 init=convshort data=cifar100 trainer.devices=4 trainer.precision=bf16": {
        "trainer.devices": 4,
        "trainer.precision": "bf16",
    },
    "nfbench train -m hydra/launcher=slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=4 data=cifar10 "
    "model=resnet18,resnet50,resnet101 init=idshort,learnscalar,convshort init.weights=he_fanout,brock seed=0,1,2 "
    "trainer.epochs=200 trainer.checkpoint_every_steps=500": {
        "data.name": "cifar10",
        "trainer.epochs": 200,
        "trainer.checkpoint_every_steps": 500,
    },
    "nfbench train -m hydra/launcher=parallel hydra.launcher.n_jobs=4 experiment=civitelli_cifar10_resnet18 seed=0": {
        **CIVITELLI_RECIPE,
        "data.name": "cifar10",
        "model.name": "resnet18",
    },
    "nfbench train -m hydra/launcher=packed hydra.launcher.runs_per_process=4 experiment=civitelli_cifar10_resnet18 "
    "trainer.cuda_graph=true seed=0,1,2,3": {
        **CIVITELLI_RECIPE,
        "model.name": "resnet18",
        "trainer.cuda_graph": True,
        "seed": 0,
    },
    "nfbench train -m experiment=lr_search init=convshort": {"init.name": "convshort"},
    "nfbench train -m experiment=lr_search init=fixup hydra/launcher=parallel hydra.sweeper.n_jobs=4": {
        "init.name": "fixup"
    },
    "nfbench train -m seed=0,1,2 init=idshort,learnscalar,convshort": {"seed": 0, "init.name": "idshort"},
    "nfbench train -m experiment=civitelli_cifar10_resnet18": {**CIVITELLI_RECIPE, "model.name": "resnet18"},
    "nfbench train -m experiment=civitelli_cifar10_cpu data.root=/tmp/nfb/cifar10-jpeg "
    "hydra.sweep.dir=/tmp/nfb/sweep": {"data.root": "/tmp/nfb/cifar10-jpeg"},
    # docs/schemes.md: the method on CIFAR-10 with the default recipe, and the paper's preset.
    "nfbench train model=resnet50 init=convshort data=cifar10": {
        **DEFAULT_RECIPE,
        "data.name": "cifar10",
        "init.name": "convshort",
    },
    "nfbench train model=resnet50 init=convshort init.weights=brock data=cifar10": {
        **DEFAULT_RECIPE,
        "init.weights": "brock",
    },
    "nfbench train init=convshort init.stem_weights=he_fanin data=cifar10": {
        **DEFAULT_RECIPE,
        "init.name": "convshort",
        "init.stem_weights": "he_fanin",
    },
    "nfbench train -m experiment=civitelli_cifar10_resnet50": {**CIVITELLI_RECIPE, "model.name": "resnet50"},
    "nfbench train model=resnet50 init=nf optim.agc=0.01": {"init.name": "nf", "optim.agc": 0.01},
}


def _get(config: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("command", list(COMPOSE))
def test_documented_training_command_composes_to_the_stated_recipe(command, capsys):
    code, out = nfbench([*first_point(command), "--cfg", "job"], capsys)
    assert code == 0, out
    config = yaml.safe_load(out)
    assert {key: _get(config, key) for key in COMPOSE[command]} == COMPOSE[command]


# ---------------------------------------------------------------------------------------------
# Commands run as written, their output checked against the numbers the docs print.
# ---------------------------------------------------------------------------------------------
def _schemes_table() -> dict[tuple[str, str], tuple[int, str]]:
    """docs/schemes.md's table against Tables 1-2: (model, init) -> (params, FLOPs in G as printed)."""
    text = (REPO / "docs" / "schemes.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 6 or not cells[0].startswith("resnet"):
            continue
        models = [m if m.startswith("resnet") else f"resnet{m}" for m in cells[0].split(" / ")]
        inits = cells[1].split(" / ")
        params = [int(p.replace(",", "")) for p in cells[2].split(" / ")]
        flops = cells[4].removesuffix(" G").split(" / ")
        pairs = [(m, i) for m in models for i in inits]
        flops = flops * len(pairs) if len(flops) == 1 else flops
        rows.update({pair: (p, f) for pair, p, f in zip(pairs, params, flops)})
    return rows


def check_tables_1_2(out: str) -> None:
    """The summary prints, for every model and scheme of docs/schemes.md's table, its params and FLOPs."""
    printed = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) >= 8 and cells[0].startswith("resnet") and cells[3] == "3x32x32":
            printed[cells[0], cells[1]] = (int(cells[4].replace(",", "")), cells[7])
    documented = _schemes_table()
    assert (
        len(documented) == 15 and printed == documented
    )  # 3 models x bn, bn_conv_shortcut, idshort, learnscalar, convshort


def check_help(out: str) -> None:
    assert all(name in out for name in cli.COMMANDS)


def check_train_help(out: str) -> None:
    assert "data.name=digits" in out and "trainer.epochs=10" in out


def check_train_help_cifar10(out: str) -> None:
    """README: `nfbench train data=cifar10 --help` shows CIFAR-10's values."""
    assert "data.name=cifar10" in out and "data.crop_padding=4" in out


def check_refused_lr(out: str) -> None:
    """README: `nfbench train optim.lr=-1` ends in one line naming the key."""
    lines = [line for line in out.splitlines() if line.startswith("nfbench: error:")]
    assert len(lines) == 1 and "optim.lr" in lines[0]


def check_spp(out: str) -> None:
    assert "resnet50 / idshort (he_fanout), 16 blocks: forward variance" in out


def check_gpu_report(committed: Path, out_dir: Path) -> None:
    """docs/results-cifar10-gpu.md: the report rebuilt from the committed runs is the committed one."""
    for name in ("report.md", "report.csv"):
        assert (out_dir / name).read_bytes() == (committed / name).read_bytes(), name


# command -> (expected exit code, check of its output)
RUN: dict[str, tuple[int, Callable[[str], None]]] = {
    "nfbench --help": (0, check_help),
    "nfbench train --help": (0, check_train_help),
    "nfbench train data=cifar10 --help": (0, check_train_help_cifar10),
    "nfbench train optim.lr=-1": (2, check_refused_lr),
    "nfbench summary model=resnet18,resnet50,resnet101 "
    "init=bn,bn_conv_shortcut,idshort,learnscalar,convshort data=cifar10": (
        0,
        check_tables_1_2,
    ),
    "nfbench spp model=resnet50 init=idshort": (0, check_spp),
}
# Reports of committed run files, rebuilt into a temporary folder and compared with the committed report.
GPU_REPORTS = [
    "nfbench report docs/results-cifar10-gpu/runs --out docs/results-cifar10-gpu/report",
    "nfbench report docs/results-cifar10-gpu/he-diagnosis/runs --out "
    "docs/results-cifar10-gpu/he-diagnosis/report --group-by +data.root +trainer.compile",
    "nfbench report docs/results-cifar10-cpu-study/gpu/runs --out docs/results-cifar10-cpu-study/gpu/report",
]

SYNOPSIS = "a synopsis with placeholders, not a command"
SKIP: dict[str, str] = {
    "nfbench": SYNOPSIS,
    "nfbench train": SYNOPSIS,
    "nfbench report": SYNOPSIS,
    "nfbench spp": SYNOPSIS,
    "nfbench summary": SYNOPSIS,
    "nfbench train [overrides]": SYNOPSIS,
    "nfbench summary [overrides]": SYNOPSIS,
    "nfbench spp [overrides]": SYNOPSIS,
    "nfbench spp-plot DIR...": SYNOPSIS,
    "nfbench spp-plot DIR ...": SYNOPSIS,
    "nfbench report DIR... [--out DIR]": SYNOPSIS,
    "nfbench spp model=resnet20 init=convshort init.stem_weights=...": SYNOPSIS,
    "nfbench train --cfg job [overrides]": SYNOPSIS,
    "nfbench train seed=S": SYNOPSIS,
    "nfbench train ... trainer.log_spp_every=5": SYNOPSIS,
    "nfbench train -m experiment=lr_search init=$s": "a shell loop's body ($s); its first point is composed by "
    "the lr_search commands above",
    "nfbench train -m hydra/sweeper=optuna hydra.sweeper.direction=maximize data.val_size=0.1 "
    "'optim.lr=tag(log, interval(0.001, 1))'": "an Optuna search of many trainings; tests/test_tune.py runs it small",
    "nfbench report /tmp/nfb/sweep --out /tmp/nfb/report": "needs the CPU study's run directories (an hour of "
    "training, not committed)",
    "nfbench report docs/results-cifar10-gpu/runs": "writes into the committed runs' folder; the same report "
    "is checked with --out (GPU_REPORTS)",
    "nfbench spp model=resnet50 init=idshort init.weights=brock spp.seeds=3 'spp.formats=[png,pdf]'": (
        "three ResNet-50 repeats (tens of seconds); the single run above covers the command"
    ),
    "nfbench spp -m model=resnet50 init=plain,bn,idshort,learnscalar,convshort init.weights=he_fanout,brock": (
        "ten ResNet-50 runs (minutes); docs/spp.md's table comes from scripts/spp_figures.sh (15 minutes)"
    ),
    "nfbench spp-plot outputs/multirun/spp/A outputs/multirun/spp/B --out figs --formats png svg": (
        "placeholder sweep folders A and B"
    ),
    # Planned GPU runs: their run files are committed by the GPU session, which then moves these to GPU_REPORTS.
    "nfbench report docs/results-cifar10-gpu/he-original/runs --out docs/results-cifar10-gpu/he-original/report "
    "--group-by +data.root": "planned (scripts/gpu_he_cifar10.sh): no run files committed yet",
    "nfbench report docs/results-cifar10-r50-gpu/runs --out docs/results-cifar10-r50-gpu/report": (
        "planned (scripts/gpu_civitelli_r50.sh): no run files committed yet"
    ),
}
SLOW_RUN = {"nfbench train experiment=quickstart"}  # also in COMPOSE; trained by test_quickstart_as_documented


def test_every_documented_command_is_classified():
    from tests.test_extending import extending_commands  # run there, in a copy with each recipe applied

    classified = set(COMPOSE) | set(RUN) | set(SKIP) | set(GPU_REPORTS) | extending_commands()
    found = documented_commands()
    assert not found - classified, f"new commands in the docs, add each to RUN, COMPOSE or SKIP: {found - classified}"
    assert not classified - found, f"commands no longer in the docs: {classified - found}"
    assert SLOW_RUN <= found


@pytest.mark.parametrize("command", list(RUN))
def test_documented_command_runs_as_written(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected_code, check = RUN[command]
    code, out = nfbench(command.split()[1:], capsys)
    assert code == expected_code, out
    check(out)


@pytest.mark.parametrize("command", GPU_REPORTS)
def test_documented_gpu_report_rebuilds_the_committed_report(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    args = command.split()[1:]
    committed = REPO / args[args.index("--out") + 1]
    args[args.index("--out") + 1] = str(tmp_path)
    code, out = nfbench(args, capsys)
    assert code == 0, out
    check_gpu_report(committed, tmp_path)


@pytest.mark.slow
def test_quickstart_as_documented(capsys, tmp_path, monkeypatch):
    """README: `nfbench train experiment=quickstart` reaches "about 98% test top-1"."""
    import json

    monkeypatch.chdir(tmp_path)
    code, out = nfbench(["train", "experiment=quickstart"], capsys)
    assert code == 0, out
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    assert result["status"] == "finished" and result["test_top1"] >= 96.0
