"""Who owns a run directory and what a resume may change (issue 10, items 1, 2 and 5): one run at a
time (a lock that survives kill -9 and node failures), no silent config drift on resume, and a
requeue never rolls back to an explicit trainer.resume older than the run's own last.pt."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nfbench import rundir
from nfbench.engine.loop import train
from nfbench.errors import ConfigError, RunDirectoryError
from nfbench.rundir.lock import STALE_AFTER_S
from tests.conftest import TINY
from tests.test_distributed import nfbench_train, wait_for
from tests.test_train import load_weights, train_killed_after

RUN_FILES = ("config.yaml", "env.json", "result.json", "metrics.jsonl", "checkpoints/last.pt")


def snapshot(run: Path, names=RUN_FILES) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in names if (run / name).exists()}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def forge_lock(run: Path, age_s: float = 0.0, **holder) -> Path:
    lock = run / rundir.LOCK
    run.mkdir(parents=True, exist_ok=True)
    lock.write_text(
        json.dumps(
            {
                "host": "node-elsewhere",
                "boot_id": "x",
                "pid": 4242,
                "pid_start": None,
                "started": "2026-01-01 00:00:00 UTC",
                **holder,
            }
        )
    )
    t = time.time() - age_s
    os.utime(lock, (t, t))
    return lock


# --- item 1: one run per run directory --------------------------------------------------------------


def test_second_run_into_a_busy_run_directory_is_refused(tmp_path):
    """Two real processes, one directory: the second exits 2 with one line naming the holder, and the
    first's files are untouched; the first then finishes with each epoch once."""
    common = [*TINY[:-2], "trainer.epochs=3", "trainer.progress=false"]
    first = nfbench_train(tmp_path, *common)
    try:
        wait_for(tmp_path / "env.json", first)
        wait_for(tmp_path / "config.yaml", first)
        first.send_signal(signal.SIGSTOP)  # hold it mid-run, deterministically
        before = snapshot(tmp_path)
        second = subprocess.run(
            [sys.executable, "-m", "nfbench.cli", "train", *common, "seed=1", f"hydra.run.dir={tmp_path}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("nfbench: error:")]
        assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"pid {first.pid}" in errors[0] and "this machine" in errors[0] and "hydra.run.dir" in errors[0]
        assert snapshot(tmp_path) == before
    finally:
        first.send_signal(signal.SIGCONT)
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out
    assert [m["epoch"] for m in rundir.read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    result = rundir.read_json(tmp_path / "result.json")
    assert result["seed"] == 0 and result["epochs"] == 3
    assert not (tmp_path / rundir.LOCK).exists()  # released at the end


def test_lock_of_a_killed_run_is_taken_over(make_cfg, tmp_path):
    """kill -9 leaves the lock behind; its pid is dead on this machine, so the next run takes it over."""
    proc = nfbench_train(tmp_path, *TINY[:-2], "trainer.epochs=50", "trainer.progress=false")
    wait_for(tmp_path / rundir.LOCK, proc)
    holder = json.loads((tmp_path / rundir.LOCK).read_text())
    proc.kill()
    proc.wait(timeout=60)
    assert holder["pid"] == proc.pid and (tmp_path / rundir.LOCK).exists()
    # The same command again: it takes the directory over (and resumes a checkpoint if one was written).
    result = train(make_cfg([*TINY[:-2], "trainer.epochs=50", "trainer.progress=false"], tmp_path))
    assert result["status"] == "finished" and result["epochs"] == 50
    assert not (tmp_path / rundir.LOCK).exists()


def test_lock_with_a_dead_pid_on_this_machine_is_stale(tmp_path):
    me = rundir.RunDirLock(tmp_path).me
    forge_lock(tmp_path, host=me["host"], boot_id=me["boot_id"], pid=dead_pid())
    with rundir.RunDirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def test_lock_of_a_live_process_here_refuses(tmp_path):
    me = rundir.RunDirLock(tmp_path).me
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        forge_lock(tmp_path, host=me["host"], boot_id=me["boot_id"], pid=sleeper.pid, pid_start=None)
        with pytest.raises(rundir.RunDirInUseError, match=f"pid {sleeper.pid} on this machine"):
            rundir.RunDirLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_from_another_host_with_a_fresh_heartbeat_refuses(make_cfg, tmp_path):
    lock = forge_lock(tmp_path, age_s=10)
    with pytest.raises(rundir.RunDirInUseError) as e:
        train(make_cfg(TINY, tmp_path))
    message = str(e.value)
    assert "\n" not in message and "host node-elsewhere" in message and "pid 4242" in message
    assert "2026-01-01 00:00:00 UTC" in message and "hydra.run.dir" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [rundir.LOCK] and lock.exists()


def test_lock_from_another_host_with_an_old_heartbeat_is_taken_over(make_cfg, tmp_path):
    """A node that failed stops its heartbeat; after STALE_AFTER_S its lock is taken over."""
    forge_lock(tmp_path, age_s=STALE_AFTER_S + 60)
    assert train(make_cfg([*TINY, "trainer.epochs=1"], tmp_path))["status"] == "finished"
    assert not (tmp_path / rundir.LOCK).exists()


def test_heartbeat_refreshes_the_lock(tmp_path):
    with rundir.RunDirLock(tmp_path, heartbeat_s=0.05) as lock:
        t = time.time() - 1000
        os.utime(lock.path, (t, t))
        time.sleep(0.5)
        assert time.time() - lock.path.stat().st_mtime < 5


def test_ddp_workers_share_the_launchers_lock(make_cfg, tmp_path):
    """trainer.devices=2: the launcher holds the lock; its rank-0 worker neither refuses nor frees it."""
    result = train(make_cfg([*TINY, "trainer.epochs=1", "trainer.devices=2"], tmp_path))
    assert result["status"] == "finished" and result["world_size"] == 2
    assert not (tmp_path / rundir.LOCK).exists()


# --- item 2: a resume may not change the trajectory -------------------------------------------------


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory, make_cfg) -> Path:
    run = tmp_path_factory.mktemp("one-epoch")
    train(make_cfg([*TINY, "trainer.epochs=1"], run))
    return run


@pytest.mark.parametrize(
    "change, key",
    [
        ("trainer.epochs=2", "trainer.epochs 1 -> 2"),
        ("optim.lr=0.05", "optim.lr 0.01 -> 0.05"),
        ("seed=1", "seed 0 -> 1"),
        ("init.weights=brock", "init.weights None -> 'brock'"),
        ("data.batch_size=64", "data.batch_size 32 -> 64"),
        ("init=bn", "init.name 'convshort' -> 'bn'"),
    ],
)
def test_resume_with_a_trajectory_change_is_refused(make_cfg, tmp_path, one_epoch_run, change, key):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    before = snapshot(run)
    with pytest.raises(ConfigError) as e:
        train(make_cfg([*TINY, "trainer.epochs=1", change], run))
    message = str(e.value)
    assert "\n" not in message and key in message and "hydra.run.dir" in message, message
    assert ("cosine schedule" in message) == change.startswith("trainer.epochs")
    assert snapshot(run) == before and set(before) == set(RUN_FILES)
    assert not (run / rundir.LOCK).exists()


def test_changed_init_is_refused_in_one_line_by_the_cli(tmp_path, one_epoch_run):
    """A different scheme (another architecture) gives the one-line refusal, not load_state_dict's traceback."""
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    before = snapshot(run)
    out = subprocess.run(
        [sys.executable, "-m", "nfbench.cli", "train", *TINY, "trainer.epochs=1", "init=bn", f"hydra.run.dir={run}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "nfbench: error: cannot resume" in out.stderr and "init.name 'convshort' -> 'bn'" in out.stderr
    assert snapshot(run) == before


def test_resume_with_a_logging_change_is_allowed(make_cfg, tmp_path, monkeypatch):
    cfg = [*TINY, "trainer.deterministic=true"]
    train_killed_after(1, make_cfg(cfg, tmp_path / "split"), monkeypatch)
    first_row = rundir.read_metrics(tmp_path / "split" / "metrics.jsonl")
    result = train(make_cfg([*cfg, "trainer.log_every=1", "trainer.checkpoint_every_steps=3"], tmp_path / "split"))
    assert result["status"] == "finished" and result["epochs"] == 2
    assert rundir.read_metrics(tmp_path / "split" / "metrics.jsonl")[:1] == first_row  # epoch 0 was not rerun
    train(make_cfg(cfg, tmp_path / "full"))
    a, b = load_weights(tmp_path / "full"), load_weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mid_epoch_checkpoint_refuses_another_world_size(make_cfg, tmp_path):
    train(make_cfg([*TINY, "trainer.epochs=1"], tmp_path))
    last = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    state["partial"] = {
        "batches_done": 4,
        "loss_sum": 0.0,
        "correct": 0,
        "seen": 0,
        "seconds": 0.0,
        "rng": [state["rng"], state["rng"]],
    }  # as a 2-process run stopped mid-epoch leaves it
    rundir.save_checkpoint(last, state)
    with pytest.raises(ConfigError, match="mid-epoch with 2 process"):
        train(make_cfg([*TINY, "trainer.epochs=1"], tmp_path))


def test_branch_records_where_it_came_from(make_cfg, tmp_path, monkeypatch):
    """trainer.resume=OTHER_RUN into a new directory continues that run there and says so; the same
    rules hold (the optimiser and schedule state it restores belong to the old values)."""
    source = tmp_path / "source"
    train_killed_after(1, make_cfg(TINY, source), monkeypatch)
    with pytest.raises(ConfigError, match="optim.lr 0.01 -> 0.05"):
        train(make_cfg([*TINY, "optim.lr=0.05", f"trainer.resume={source}"], tmp_path / "refused"))
    assert not (tmp_path / "refused" / "config.yaml").exists()
    run, branch = tmp_path / "branch", [*TINY, f"trainer.resume={source}"]
    result = train(make_cfg(branch, run))
    origin = {"checkpoint": str((source / "checkpoints" / "last.pt").resolve()), "epoch": 1}
    assert result["resumed_from"] == origin == rundir.read_json(run / "result.json")["resumed_from"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 2 and state["resumed_from"] == origin
    # A requeue of the branch (the same command) continues its own last.pt and keeps the record.
    assert train(make_cfg(branch, run))["resumed_from"] == origin


def test_config_key_added_since_the_checkpoint_counts_at_its_default():
    new = {"data": {"name": "digits", "num_workers": 0}, "seed": 0}
    assert rundir.config_changes({"data": {"name": "digits"}, "seed": 0}, new) == {}
    assert rundir.config_changes(
        {"data": {"name": "digits"}, "seed": 0}, {**new, "data": {"name": "digits", "num_workers": 2}}
    ) == {"data.num_workers": (0, 2)}  # the old run ran at the default


# --- item 5: a requeue never rolls back to an explicit trainer.resume ------------------------------


def test_requeue_with_explicit_resume_continues_the_newer_last_checkpoint(make_cfg, tmp_path, monkeypatch, caplog):
    cfg = [*TINY, "trainer.deterministic=true", "trainer.epochs=3"]
    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    train_killed_after(1, make_cfg(cfg, run), monkeypatch)
    epoch0 = (ckpts / "last.pt").read_bytes()
    train_killed_after(2, make_cfg(cfg, run), monkeypatch)
    (ckpts / "best.pt").write_bytes(epoch0)  # an older checkpoint of this run than last.pt (epoch 1)
    rows = rundir.read_metrics(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    with caplog.at_level("INFO", logger="nfbench"):
        result = train(make_cfg([*cfg, f"trainer.resume={ckpts / 'best.pt'}"], run))
    assert f"resumed from {ckpts / 'last.pt'}: epoch 3" in caplog.text
    assert result["epochs"] == 3 and rundir.read_metrics(run / "metrics.jsonl")[:2] == rows  # epoch 1 kept
    assert result["resumed_from"] is None  # its own checkpoints: not a branch
    train(make_cfg(cfg, tmp_path / "full"))
    a, b = load_weights(tmp_path / "full"), load_weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_readers_of_another_jobs_files_are_lenient_and_ours_strict(tmp_path):
    """A reader of a job still running elsewhere (strict=False) takes a half-written result.json as none
    and skips a damaged metrics line; the run's own reader (strict) names the damage."""
    (tmp_path / "result.json").write_text('{"status": "fin')
    assert rundir.read_json(tmp_path / "result.json", strict=False) is None
    assert rundir.read_json(tmp_path / "absent.json", strict=False) is None
    with pytest.raises(ValueError):
        rundir.read_json(tmp_path / "result.json")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n{"epoch"')
    assert [m["epoch"] for m in rundir.read_metrics(metrics, strict=False)] == [1, 3]
    with pytest.raises(RunDirectoryError, match="line 2"):
        rundir.read_metrics(metrics)
    assert rundir.read_metrics(tmp_path / "none.jsonl", strict=False) == []


def test_config_reader_prefers_the_resolved_config_and_falls_back_to_hydras(tmp_path):
    assert rundir.read_config(tmp_path) is None
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        "trainer:\n  run_dir: ${hydra:runtime.output_dir}\n  epochs: 2\nsched:\n  total: ${trainer.epochs}\n"
    )
    # ${hydra:...} stays as written, whatever Hydra state the reading process holds (an in-process
    # `nfbench train` before it leaves one); every other interpolation resolves.
    assert rundir.read_config(tmp_path) == {
        "trainer": {"run_dir": "${hydra:runtime.output_dir}", "epochs": 2},
        "sched": {"total": 2},
    }
    (tmp_path / "config.yaml").write_text("trainer:\n  epochs: 3\nsched:\n  total: ${trainer.epochs}\n")
    assert rundir.read_config(tmp_path) == {"trainer": {"epochs": 3}, "sched": {"total": 3}}


# --- issue 14: what a checkpoint holds, and its restore, in one place ------------------------------


def test_checkpoint_state_restores_into_fresh_objects(tmp_path):
    """checkpoint_state -> save_checkpoint -> load_checkpoint -> restore_checkpoint gives fresh objects the
    trained ones' states and a fresh record the run's standing, each through its state_dict protocol; the
    entries keep the order every checkpoint since version 3 has; a checkpoint written before data.val_size
    names its best best_test_top1."""
    from nfbench.engine.state import CHECKPOINT_ORDER, Record, Restored, checkpoint_state, restore_checkpoint

    def objects(seed: int):
        torch.manual_seed(seed)
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        return {
            "model": net,
            "optimizer": opt,
            "scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
            "scaler": torch.amp.GradScaler("cpu", enabled=False),
        }

    def record() -> Record:
        return Record(tmp_path, {"seed": 0}, "val_top1", {"num_classes": 2})

    trained = objects(0)
    trained["model"](torch.ones(4, 3)).sum().backward()
    trained["optimizer"].step(), trained["scheduler"].step()
    partial = {"batches_done": 3, "loss_sum": 1.5, "correct": 2, "seen": 12, "seconds": 0.5, "rng": []}
    history = [{"epoch": e, "val_top1": 50.0 + e} for e in range(1, 5)]
    standing = record()
    standing.best_top1, standing.best_from, standing.history = 61.0, 2, history
    state = checkpoint_state(trained, standing, 4, partial, wall_s=12.5)
    assert tuple(state) == CHECKPOINT_ORDER
    rundir.save_checkpoint(tmp_path / rundir.LAST, state)
    loaded = rundir.load_checkpoint(tmp_path / rundir.LAST)

    fresh, back = objects(1), record()
    assert restore_checkpoint(loaded, fresh, back) == Restored(epoch=4, partial=partial, history=history)
    assert (back.best_top1, back.wall_before, back.best_from) == (61.0, 12.5, 2)
    assert all(
        torch.equal(a, b) for a, b in zip(fresh["model"].state_dict().values(), trained["model"].state_dict().values())
    )
    momentum = [o["optimizer"].state_dict()["state"][0]["momentum_buffer"] for o in (fresh, trained)]
    assert torch.equal(*momentum)
    assert fresh["scheduler"].state_dict() == trained["scheduler"].state_dict()
    assert fresh["scheduler"].get_last_lr() == [0.05]

    legacy = {k: v for k, v in loaded.items() if k not in ("best_top1", "history", "best_from")} | {
        "best_test_top1": 55.0,
        "partial": None,
    }
    old = record()
    assert restore_checkpoint(legacy, objects(2), old) == Restored(4, None)  # no history kept
    assert (old.best_top1, old.best_from) == (55.0, 1)
