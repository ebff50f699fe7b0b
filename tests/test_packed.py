"""Packed training (issue 23; nfbench/engine/pack.py, hydra/launcher=packed): K runs of a sweep in one process,
a step of each in turn, each still a run of its own, and each equal, bit for bit on the CPU, to the same
config trained alone."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from nfbench import rundir
from nfbench.engine import epoch as epoch_module
from nfbench.engine.loop import start_of, train
from nfbench.engine.pack import pack_key, plan_packs, train_pack
from nfbench.errors import Preempted
from nfbench.rundir.lock import RunDirInUseError, _boot_id
from tests.conftest import TINY

# Every draw a run makes goes through the process's RNG: RandAugment and the crops (torch), mixup (NumPy).
COMMON = [
    *TINY,
    "trainer.deterministic=true",
    "data.randaugment=true",
    "sched.per_step=true",
    "trainer.log_every=3",
    "trainer.checkpoint_every_steps=3",
    "logger=csv",
]
RUNS = [["seed=0"], ["seed=1", "optim.lr=0.05", "trainer.mixup_alpha=0.4"], ["seed=2", "optim.lr=1e6"]]
TIMING = ("images_per_s", "epoch_s", "wall_s")


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def assert_same_run(alone: Path, packed: Path) -> None:
    """The same run: result.json, metrics.jsonl and the CSV log (timings aside), the checkpoints kept and every
    state in them (weights, momentum, schedule, record, random state)."""
    assert untimed(rundir.read_json(alone / "result.json")) == untimed(rundir.read_json(packed / "result.json"))
    assert [untimed(r) for r in rundir.read_metrics(alone / "metrics.jsonl")] == [
        untimed(r) for r in rundir.read_metrics(packed / "metrics.jsonl")
    ]
    kept = sorted(p.name for p in (alone / "checkpoints").glob("*")) if (alone / "checkpoints").exists() else []
    assert kept == (sorted(p.name for p in (packed / "checkpoints").glob("*")) if kept else [])
    for name in kept:
        if name.endswith(".pt"):
            a, b = (rundir.load_checkpoint(d / "checkpoints" / name) for d in (alone, packed))
            for key in ("model", "optimizer", "scheduler", "epoch", "partial", "best_top1", "history", "rng"):
                assert_equal(a[key], b[key], f"{name}:{key}")


def assert_equal(a, b, where: str) -> None:
    """``a`` and ``b`` equal, tensors bit for bit, NaN equal to NaN, clocks (TIMING, a partial epoch's
    seconds) left out."""
    if where.rsplit(".", 1)[-1] in (*TIMING, "seconds"):
        return
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


def starts(make_cfg, root: Path, runs=RUNS, common=COMMON):
    return [start_of(make_cfg([*common, *extra], root / str(k))) for k, extra in enumerate(runs)]


def test_a_pack_trains_each_run_as_it_trains_alone(make_cfg, tmp_path):
    """Three runs (other seeds, learning rates, mixup), one diverging: packed == alone, bit for bit, the
    diverged run stopping alone and recorded as diverged while the others train on."""
    for k, extra in enumerate(RUNS):
        train(make_cfg([*COMMON, *extra], tmp_path / "alone" / str(k)))
    outcomes = train_pack(starts(make_cfg, tmp_path / "packed"), ["a", "b", "c"])
    assert [o["status"] for o in outcomes] == ["finished", "finished", "diverged"]
    assert outcomes[2]["divergence"]["epoch"] == 1
    for k in range(len(RUNS)):
        assert_same_run(tmp_path / "alone" / str(k), tmp_path / "packed" / str(k))
        assert outcomes[k] == rundir.read_json(tmp_path / "packed" / str(k) / "result.json")
        tables = [tmp_path / run / str(k) / "metrics.csv" for run in ("alone", "packed")]  # each run's own logger
        lines = [p.read_text().count("\n") if p.exists() else None for p in tables]
        assert lines == ([3, 3] if k < 2 else [None, None])  # a header and 2 epochs; none for the diverged run


def signal_at(monkeypatch, step: int) -> None:
    """Send this process SIGUSR1 after the first run to reach step ``step`` of an epoch has taken it (as SLURM's
    warning before a time limit would)."""
    between = epoch_module._between_steps
    sent = []

    def then_signal(loop, run, done):
        if done == step and not sent:
            sent.append(done)
            os.kill(os.getpid(), signal.SIGUSR1)
        between(loop, run, done)

    monkeypatch.setattr(epoch_module, "_between_steps", then_signal)


def test_a_stop_signal_checkpoints_every_run_and_the_rerun_resumes_every_run(make_cfg, tmp_path, monkeypatch):
    """SIGUSR1 at step 3 of epoch 1: every run of the pack saves its mid-epoch checkpoint and lets go of its run
    directory, the pack exits as a run alone does (Preempted, 128 + signal), and the pack trained again resumes
    every run to the weights of the same run trained alone without a stop."""
    runs = RUNS[:2]
    # A per-epoch schedule: after a mid-epoch resume, metrics.jsonl's lr of a per-step schedule is the lr of the
    # step resumed at, not of the epoch's first step, alone as in a pack (the weights are exact either way).
    common = [c for c in COMMON if c != "sched.per_step=true"]
    for k, extra in enumerate(runs):
        train(make_cfg([*common, *extra], tmp_path / "alone" / str(k)))
    packed = starts(make_cfg, tmp_path / "packed", runs, common)
    with monkeypatch.context() as m:
        signal_at(m, 3)
        with pytest.raises(Preempted) as stop:
            train_pack(packed, ["a", "b"])
    assert stop.value.code == 128 + signal.SIGUSR1
    for k in range(len(runs)):
        state = rundir.load_checkpoint(tmp_path / "packed" / str(k) / "checkpoints" / "last.pt")
        assert state["epoch"] == 0 and state["partial"]["batches_done"] == 3
        assert not (tmp_path / "packed" / str(k) / rundir.LOCK).exists()
    resumed = train_pack(packed, ["a", "b"])
    assert [o["status"] for o in resumed] == ["finished", "finished"]
    for k in range(len(runs)):
        assert_same_run(tmp_path / "alone" / str(k), tmp_path / "packed" / str(k))


def test_every_run_of_a_pack_holds_its_own_lock_and_writes_its_own_files(make_cfg, tmp_path, monkeypatch):
    """While the pack trains, each run directory is locked by this process under its own lock file; a run whose
    directory another live process holds is refused alone (the others train); each run writes its own
    files, and its lock goes when it ends."""
    busy = tmp_path / "2"
    busy.mkdir()
    holder = {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": 1, "pid_start": None}
    (busy / rundir.LOCK).write_text(json.dumps(holder))  # pid 1 lives as long as the machine does
    seen: list[dict] = []
    between = epoch_module._between_steps

    def look(loop, run, done):
        seen.append(json.loads((loop.record.run_dir / rundir.LOCK).read_text()))
        between(loop, run, done)

    monkeypatch.setattr(epoch_module, "_between_steps", look)
    runs = [["seed=0"], ["seed=1"], ["seed=2"]]
    outcomes = train_pack(starts(make_cfg, tmp_path, runs, TINY), ["a", "b", "c"])
    assert [o["status"] for o in outcomes[:2]] == ["finished", "finished"]
    assert isinstance(outcomes[2], RunDirInUseError) and "pid 1" in str(outcomes[2])
    assert seen and {lock["pid"] for lock in seen} == {os.getpid()}
    for k in (0, 1):
        run = tmp_path / str(k)
        assert {"config.yaml", "env.json", "metrics.jsonl", "result.json", "checkpoints"} <= {
            p.name for p in run.iterdir()
        }
        assert rundir.read_json(run / "result.json")["seed"] == k
        assert rundir.load_checkpoint(run / "checkpoints" / "last.pt")["config"]["seed"] == k
        assert not (run / rundir.LOCK).exists()
    assert sorted(p.name for p in busy.iterdir()) == [rundir.LOCK]  # the busy directory as it was


def test_pack_key_decides_which_configs_share_a_pack(make_cfg):
    """The seed, init.* values, optimiser and schedule may differ in a pack; the network, data, batch,
    precision, device and epochs may not; DDP, torch.compile and wandb train alone."""
    key = pack_key(make_cfg(TINY))[0]
    assert key is not None
    for same in (
        ["seed=3"],
        ["optim.lr=0.3", "optim.weight_decay=1e-4"],
        ["sched=constant"],
        ["init.weights=brock"],
        ["trainer.log_every=5"],
        ["logger=none"],
        ["trainer.resume=/elsewhere"],
    ):
        assert pack_key(make_cfg([*TINY, *same]))[0] == key, same
    for other in (
        ["model.width=8"],
        ["init=bn"],
        ["data.batch_size=16"],
        ["data.train_subset=128"],
        ["trainer.precision=bf16"],
        ["trainer.device=cpu"],
        ["trainer.epochs=3"],
        ["trainer.channels_last=true"],
        ["data.randaugment=true"],
    ):
        assert pack_key(make_cfg([*TINY, *other]))[0] not in (key, None), other
    for alone, why in (
        (["trainer.devices=2"], "2 processes"),
        (["trainer.compile=true"], "torch.compile"),
        (["logger=wandb"], "wandb"),
    ):
        found, reason = pack_key(make_cfg([*TINY, *alone]))
        assert found is None and why in reason, alone


def test_plan_packs_groups_equal_keys_in_sweep_order_up_to_the_size():
    keys = ["a", "b", "a", None, "a", "b", "a", "c"]
    assert plan_packs(keys, 2) == [[0, 2], [1, 5], [3], [4, 6], [7]]
    assert plan_packs(keys, 4) == [[0, 2, 4, 6], [1, 5], [3], [7]]
    assert plan_packs(keys, 1) == [[i] for i in range(len(keys))]


def nfbench(*args: str, script: str = "") -> subprocess.CompletedProcess:
    code = f"{script}\nimport sys\nfrom nfbench.cli.main import main\nmain(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


# The process sends itself SIGTERM when the first run reaches step 3 of its second epoch.
TERM_IN_EPOCH_2 = """
import os, signal
import nfbench.engine.epoch as e
_between = e._between_steps
def between(loop, run, done):
    if run.epoch == 1 and done == 3 and not getattr(e, "sent", False):
        e.sent = True
        os.kill(os.getpid(), signal.SIGTERM)
    _between(loop, run, done)
e._between_steps = between
"""


def test_a_packed_sweep_from_the_command_line(make_cfg, tmp_path):
    """`nfbench train -m hydra/launcher=packed`: jobs of one network share packs (in sweep order), the other width
    its own; each job has its own directory, .hydra/ files and train.log; SIGTERM mid-epoch checkpoints every
    run, the same command again resumes every run to the weights of the run alone, and `nfbench report` reads
    the sweep as it reads any."""
    common = [c for c in COMMON if c not in ("sched.per_step=true", "logger=csv", "model.width=4")]  # see above
    sweep = [
        "train",
        "-m",
        "hydra/launcher=packed",
        "hydra.launcher.runs_per_process=2",
        *common,
        "logger=none",
        "seed=0,1",
        "model.width=4,8",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]
    first = nfbench(*sweep, script=TERM_IN_EPOCH_2)
    assert first.returncode == 128 + signal.SIGTERM and "Traceback" not in first.stderr, first.stderr[-3000:]
    stopped = sorted((tmp_path / "sweep").glob("[0-9]"))
    assert len(stopped) == 2, stopped  # the first pack stopped, and the process with it: the second never began
    for job in stopped:
        state = rundir.load_checkpoint(job / "checkpoints" / "last.pt")
        assert state["epoch"] == 1 and state["partial"]["batches_done"] == 3
    again = nfbench(*sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    jobs = sorted((tmp_path / "sweep").glob("[0-9]"))
    width = {job.name: rundir.read_json(job / "result.json")["params"] for job in jobs}  # the width, by its size
    for w in set(width.values()):
        pack = ", ".join(f"#{name}" for name in sorted(n for n in width if width[n] == w))
        assert f"training a pack of 2 runs in lockstep ({pack})" in out, out[-3000:]
    assert len(jobs) == 4 and len(set(width.values())) == 2
    for job in jobs:
        overrides = [o for o in OmegaConf.load(job / ".hydra" / "overrides.yaml") if not o.startswith("hydra")]
        alone = tmp_path / "alone" / job.name
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the sweep's processes (OMP_NUM_THREADS=1): another count sums in another order
        try:
            train(make_cfg(overrides, alone))
        finally:
            torch.set_num_threads(threads)
        assert_same_run(alone, job)
        assert {"config.yaml", "hydra.yaml", "overrides.yaml"} <= {p.name for p in (job / ".hydra").iterdir()}
        log = (job / "train.log").read_text()
        assert str(job) in log and not any(str(other) in log for other in jobs if other != job)
    report = nfbench("report", str(tmp_path / "sweep"))
    assert report.returncode == 0, report.stderr
    with open(tmp_path / "sweep" / "report" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["width"], r["seeds"], r["diverged"]) for r in rows) == [("4", "2", "0"), ("8", "2", "0")]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_a_graphed_pack_on_cuda_streams_trains_each_run_as_alone(make_cfg, tmp_path):
    """On a GPU, each run of a pack replays its own CUDA graph on its own stream: with cuDNN deterministic the
    weights equal the same run trained alone, bit for bit."""
    common = [
        *TINY,
        "trainer.device=cuda",
        "trainer.cuda_graph=true",
        "trainer.deterministic=true",
        "logger=none",
        "trainer.channels_last=true",
        "trainer.precision=bf16",
    ]
    runs = [["seed=0"], ["seed=1", "optim.lr=0.05"]]
    for k, extra in enumerate(runs):
        train(make_cfg([*common, *extra], tmp_path / "alone" / str(k)))
    outcomes = train_pack(starts(make_cfg, tmp_path / "packed", runs, common), ["a", "b"])
    assert [o["status"] for o in outcomes] == ["finished", "finished"]
    for k in range(len(runs)):
        assert_same_run(tmp_path / "alone" / str(k), tmp_path / "packed" / str(k))


def test_the_stacked_alternative_matches_separate_steps_to_float_rounding():
    """benchmarks/stacked.py: K copies trained as one vmapped network through nfbench's own (graphed) step.
    The first step's losses and top-1 hits equal K separate steps' bit for bit; after four steps the weights
    agree to float32 rounding only (a grouped convolution sums its weight gradient in another order), which is
    why the runner packs with streams, exact by construction, and the stacked step stays a benchmark mode."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from stacked import StackedLoss, StackedNet, stacked_optimizer

    from nfbench.config import OptimConfig, option_config
    from nfbench.engine.graph import GraphedStep
    from nfbench.engine.optim import build_optimizer
    from nfbench.engine.runtime import seed_all
    from nfbench.engine.step import StepObjects
    from nfbench.models import build_model
    from nfbench.schemes import build_scheme

    k, batch, cpu = 3, 16, torch.device("cpu")
    optim = OptimConfig(lr=0.1, weight_decay=5e-4)
    amp = dict(device_type="cpu", dtype=torch.float32, enabled=False)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    criterion = torch.nn.CrossEntropyLoss()
    nets = []
    for seed in range(k):
        seed_all(seed)
        nets.append(
            build_model(
                option_config("model", "resnet20", width=4), build_scheme(option_config("init", "convshort")), 10, 3, 8
            )
        )
    stacked = StackedNet(nets)
    alone = [
        GraphedStep(StepObjects(net, build_optimizer(net, optim, cpu), criterion, amp, scaler, optim)) for net in nets
    ]
    loss = StackedLoss(criterion, k)
    together = GraphedStep(
        StepObjects(stacked, stacked_optimizer(stacked, nets[0], optim, cpu), loss, amp, scaler, optim)
    )
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        xs, ys = torch.randn(k * batch, 3, 8, 8, generator=gen), torch.randint(0, 10, (k * batch,), generator=gen)
        with torch.no_grad():
            per_copy = loss.per_copy(stacked(xs), ys)
        separate = [alone[i](xs[i * batch : (i + 1) * batch], ys[i * batch : (i + 1) * batch]) for i in range(k)]
        _, hits = together(xs, ys)
        if step == 0:
            assert torch.equal(per_copy, torch.stack([s[0] for s in separate]))
            assert int(hits) == sum(int(s[1]) for s in separate)
        assert torch.allclose(per_copy, torch.stack([s[0] for s in separate]), rtol=1e-5, atol=0)
    for i, net in enumerate(nets):
        copy = stacked.copy_weights(i)
        for name, p in net.named_parameters():
            assert torch.allclose(p.detach(), copy[name].detach(), rtol=0, atol=1e-6 * float(p.abs().max())), name
