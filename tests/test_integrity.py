"""A run directory holds what its files say (issue 10): no NaN checkpoint over a good one, checksummed
checkpoints, a torn metrics line repaired, strict JSON, one epoch numbering, one file mode, and
one-line errors for a full or read-only disk."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nfbench import rundir
from nfbench.engine.loop import train
from nfbench.errors import ConfigError, RunDirectoryError
from tests.conftest import TINY
from tests.test_train import train_killed_after


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_divergence_between_log_steps_never_checkpoints_nan(make_cfg, tmp_path, caplog):
    """A save at step 3 with log_every=5 used to write the diverged weights over the last good checkpoint."""
    cfg = [*TINY, "init=plain", "optim.lr=1e6", "trainer.checkpoint_every_steps=3", "trainer.log_every=5"]
    with caplog.at_level(logging.ERROR, logger="nfbench"):
        result = train(make_cfg(cfg, tmp_path))
    assert result["status"] == "diverged"
    last = tmp_path / "checkpoints" / "last.pt"
    message = next(r.getMessage() for r in caplog.records if "diverged" in r.getMessage())
    if last.exists():
        assert all_finite(rundir.load_checkpoint(last)) and str(last) in message
    else:
        assert "no checkpoint" in message
    assert rundir.read_json(tmp_path / "result.json")["status"] == "diverged"


def test_divergence_after_a_good_epoch_keeps_it(make_cfg, tmp_path, caplog, monkeypatch):
    """Epoch 1 trains well; epoch 2 diverges between log steps: last.pt stays epoch 1's finite state."""
    train_killed_after(1, make_cfg(TINY, tmp_path), monkeypatch)  # 2 epochs planned, stopped after the first
    good = rundir.load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    cfg = [*TINY, "trainer.checkpoint_every_steps=3", "trainer.log_every=5"]  # changes a resume allows
    state = dict(good, optimizer=good["optimizer"])
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = 1e6  # the resumed optimiser diverges at once
    state["config"] = good["config"]
    rundir.save_checkpoint(tmp_path / "checkpoints" / "last.pt", state)
    with caplog.at_level(logging.ERROR, logger="nfbench"):
        result = train(make_cfg(cfg, tmp_path))
    assert result["status"] == "diverged"
    kept = rundir.load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert all_finite(kept) and kept["epoch"] == 1 and kept["partial"] is None
    assert any(str(tmp_path / "checkpoints" / "last.pt") in r.getMessage() for r in caplog.records)


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_bit_rot_in_a_checkpoint_is_detected(make_cfg, tmp_path):
    train(make_cfg([*TINY, "trainer.epochs=1"], tmp_path))
    last = tmp_path / "checkpoints" / "last.pt"
    assert rundir.load_checkpoint(last)["epoch"] == 1
    flip_middle_byte(last)
    with pytest.raises(rundir.CorruptCheckpointError, match="last.pt cannot be read.*checksum"):
        rundir.load_checkpoint(last)


def test_bit_rot_rerun_is_one_line_and_trains_nothing(tmp_path):
    run = tmp_path / "run"
    overrides = [*TINY, "trainer.epochs=1", f"hydra.run.dir={run}"]
    cmd = [sys.executable, "-m", "nfbench.cli", "train", *overrides]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    flip_middle_byte(run / "checkpoints" / "last.pt")
    before = (run / "metrics.jsonl").read_bytes()
    out = subprocess.run([*cmd[:-2], "trainer.epochs=2", cmd[-1]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "nfbench: error: checkpoint" in out.stderr
    assert (run / "metrics.jsonl").read_bytes() == before


def test_old_checkpoint_without_checksum_loads_with_one_warning(tmp_path, caplog):
    path = tmp_path / "old.pt"
    # As nfbench wrote them before checksums: no version, "epoch" the 0-based index of the last epoch done.
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 0}, path)
    with caplog.at_level(logging.WARNING, logger="nfbench"):
        assert rundir.load_checkpoint(path)["epoch"] == 1  # one epoch completed
        rundir.load_checkpoint(path)
    assert sum("no checksum" in r.getMessage() for r in caplog.records) == 1


def test_interrupted_checkpoint_save_keeps_the_old_one_loadable(tmp_path, monkeypatch):
    """Killed between writing the checksum and renaming the checkpoint: the old file still verifies."""
    target = tmp_path / "last.pt"
    rundir.save_checkpoint(target, {"model": {"w": torch.zeros(3)}, "epoch": 1})
    replace = os.replace

    def die_on_checkpoint(src, dst):
        if Path(dst).name == "last.pt":
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(os, "replace", die_on_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        rundir.save_checkpoint(target, {"model": {"w": torch.ones(3)}, "epoch": 2})
    monkeypatch.undo()
    assert rundir.load_checkpoint(target)["epoch"] == 1
    rundir.save_checkpoint(target, {"model": {"w": torch.ones(3)}, "epoch": 3})
    assert rundir.load_checkpoint(target)["epoch"] == 3


def test_torn_final_metrics_line_is_repaired_on_resume(make_cfg, tmp_path, monkeypatch):
    cfg = [*TINY, "trainer.epochs=2"]
    train_killed_after(1, make_cfg(cfg, tmp_path), monkeypatch)
    metrics = tmp_path / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"epoch": 2, "lr": 0.0')  # a crash mid-append of the next epoch's line
    assert [r["epoch"] for r in rundir.read_metrics(metrics)] == [1]
    result = train(make_cfg(cfg, tmp_path))
    assert result["status"] == "finished" and result["epochs"] == 2
    assert [r["epoch"] for r in rundir.read_metrics(metrics)] == [1, 2]
    assert all(json.loads(line) for line in metrics.read_text().splitlines())


def test_corrupt_metrics_line_before_the_last_names_file_and_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
    with pytest.raises(RunDirectoryError, match=rf"{metrics}.*line 2"):
        rundir.read_metrics(metrics)
    with pytest.raises(RunDirectoryError, match=rf"{metrics}.*line 2"):  # a resume reads it the same way
        rundir.reconcile_history(metrics, [{"epoch": 1}], 1, tmp_path / "last.pt")


def nfbench_train(run_dir: Path, *overrides: str, script: str = "") -> subprocess.Popen:
    """`nfbench train OVERRIDES` in a new process; ``script`` runs first (e.g. to slow something down)."""
    code = f"{script}\nimport sys\nfrom nfbench.cli.main import main\nmain(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, "train", *overrides, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.02)


def same_run(a: Path, b: Path) -> None:
    """Identical final weights and per-epoch metrics (timings aside)."""
    wa, wb = (
        rundir.load_checkpoint(a / "checkpoints" / "last.pt")["model"],
        rundir.load_checkpoint(b / "checkpoints" / "last.pt")["model"],
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    timing = ("images_per_s", "epoch_s", "wall_s")
    rows = [
        [{k: v for k, v in r.items() if k not in timing} for r in rundir.read_metrics(d / "metrics.jsonl")]
        for d in (a, b)
    ]
    assert rows[0] == rows[1]


# Every evaluation batch (of 4 images) takes 0.2 s, and the first one touches a marker file.
SLOW_EVAL = """
import sys, time
from pathlib import Path
import nfbench.engine.evaluate as t
_topk = t.topk_correct
def slow(*args):
    with open(Path(sys.argv[-1].split("=", 1)[1], "evaluating"), "a") as f:
        f.write("batch\\n")  # one line per evaluated batch
    time.sleep(0.2)
    return _topk(*args)
t.topk_correct = slow
"""
EVAL_STOP = [*TINY, "data.test_batch_size=4", "trainer.deterministic=true"]


def test_sigint_during_evaluation_stops_within_seconds_and_resumes_exactly(make_cfg, tmp_path):
    """Ctrl-C while epoch 1 is evaluated (32 batches of 0.2 s): the process leaves after at most the batch
    in flight and the next (counted in batches, not seconds, so a loaded machine cannot fail it), without
    a traceback, with epoch 1's training saved; the resumed run evaluates it and ends as an
    uninterrupted run does."""
    train(make_cfg(EVAL_STOP, tmp_path / "ref"))
    run = tmp_path / "run"
    proc = nfbench_train(run, *EVAL_STOP, script=SLOW_EVAL)
    wait_for(run / "evaluating", proc)
    proc.send_signal(signal.SIGINT)
    at_signal = len((run / "evaluating").read_text().splitlines())
    _, err = proc.communicate(timeout=60)
    evaluated = len((run / "evaluating").read_text().splitlines())
    assert evaluated - at_signal <= 2 and evaluated < 32, (at_signal, evaluated)
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err
    state = rundir.load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 0 and state["partial"]["batches_done"] == 8  # epoch 1 trained, not evaluated
    assert rundir.read_metrics(run / "metrics.jsonl") == []
    again = nfbench_train(run, *EVAL_STOP)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    same_run(tmp_path / "ref", run)


# The full digits training set in batches of 32: 44 steps per epoch, long enough to stop mid-epoch.
PREEMPT = [
    "data=digits",
    "data.batch_size=32",
    "model=resnet20",
    "model.width=4",
    "trainer.epochs=2",
    "trainer.progress=false",
    "trainer.deterministic=true",
    "trainer.log_every=1",
]


@pytest.mark.slow
def test_sigint_mid_training_checkpoints_and_resume_is_exact(tmp_path):
    reference = nfbench_train(tmp_path / "ref", *PREEMPT)
    assert reference.wait(timeout=600) == 0, reference.communicate()
    run = tmp_path / "run"
    proc = nfbench_train(run, *PREEMPT)
    wait_for(run / "checkpoints" / "last.pt", proc)  # the end of epoch 1
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err
    state = rundir.load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and 0 < state["partial"]["batches_done"] < 44, "stopped mid-epoch"
    again = nfbench_train(run, *PREEMPT)
    assert again.wait(timeout=600) == 0, again.communicate()
    same_run(tmp_path / "ref", run)


def refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def test_result_json_is_strict_json_after_a_divergence(make_cfg, tmp_path):
    result = train(make_cfg([*TINY, "init=plain", "optim.lr=1e6"], tmp_path))
    on_disk = json.loads((tmp_path / "result.json").read_text(), parse_constant=refuse_constant)
    assert on_disk["divergence"]["loss"] is None and on_disk["divergence"]["loss_str"] in ("nan", "inf", "-inf")
    assert on_disk == result
    rundir.write_metrics(tmp_path / "m.jsonl", [{"epoch": 1, "test_loss": math.inf}])
    line = (tmp_path / "m.jsonl").read_text()
    assert json.loads(line, parse_constant=refuse_constant) == {"epoch": 1, "test_loss": None, "test_loss_str": "inf"}


def test_run_directory_files_follow_the_umask(make_cfg, tmp_path):
    old = os.umask(0o027)
    try:
        train(make_cfg([*TINY, "trainer.epochs=1"], tmp_path))
    finally:
        os.umask(old)
    files = [
        tmp_path / n
        for n in (
            "result.json",
            "env.json",
            "config.yaml",
            "metrics.jsonl",
            "checkpoints/last.pt",
            "checkpoints/last.pt.sha256",
            "checkpoints/best.pt",
        )
    ]
    assert {oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {oct(0o640)}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_full_or_read_only_run_directory_is_one_line(make_cfg, tmp_path, monkeypatch, code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(RunDirectoryError) as e:
        train(make_cfg([*TINY, "trainer.epochs=1"], tmp_path))
    message = str(e.value)
    assert "\n" not in message and str(tmp_path) in message and os.strerror(code) in message
    with pytest.raises(RunDirectoryError, match="metrics.jsonl"):  # the record of epochs, rewritten each epoch
        rundir.write_metrics(tmp_path / "metrics.jsonl", [{"epoch": 1}])


def test_cli_reports_run_directory_errors_in_one_line(capsys):
    from nfbench.cli.main import _user_errors

    message = "cannot write /x/result.json: No space left on device; free space"

    def full(cfg):
        raise RunDirectoryError(message)

    with pytest.raises(SystemExit) as e:
        _user_errors(full)(None)
    assert e.value.code == 2 and capsys.readouterr().err == f"nfbench: error: {message}\n"


def test_refusal_is_one_line_under_a_hydra_config_without_a_job(capsys):
    """A Hydra config left by an earlier in-process command (its output_dir missing, '???') made the refusal
    itself crash with MissingMandatoryValue; it ends in the one line and exit 2."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from nfbench.cli.main import CONF_DIR, _user_errors
    from nfbench.configstore import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(SystemExit) as e:
            _user_errors(lambda _: (_ for _ in ()).throw(RunDirectoryError("disk full")))(None)
    finally:
        HydraConfig.instance().cfg = None
    assert e.value.code == 2 and capsys.readouterr().err == "nfbench: error: disk full\n"


@pytest.mark.parametrize("override", ["optim.lr=inf", "optim.lr=nan", "optim.weight_decay=inf"])
def test_non_finite_hyperparameters_are_refused(make_cfg, override):
    from nfbench.engine.validation import validate

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        validate(make_cfg([override]))


@pytest.mark.parametrize("override", ["data.mean=[0.5,0.5,0.5]", "data.std=[0.2,0.2]"])
def test_normalisation_of_another_channel_count_is_refused(make_cfg, tmp_path, override):
    other = "data.std=[0.2,0.2,0.2]" if "mean" in override else "data.mean=[0.5,0.5]"
    with pytest.raises(ConfigError, match=r"data\.(mean|std).*1 channel"):
        train(make_cfg([*TINY, override, other], tmp_path))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_slurm_preset_refuses_zero_gpus_per_node():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    from nfbench.cli.main import CONF_DIR
    from nfbench.configstore import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        ok = compose(
            "config", overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"], return_hydra_config=True
        )
        zero = compose(
            "config", overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0"], return_hydra_config=True
        )
    assert ok.hydra.launcher.tasks_per_node == 4
    with pytest.raises(InterpolationResolutionError, match="hydra.launcher.gpus_per_node=0 is not allowed"):
        OmegaConf.to_container(zero.hydra.launcher, resolve=True)


def test_train_log_is_written_under_several_devices(tmp_path):
    run = tmp_path / "run"
    proc = nfbench_train(run, *TINY, "trainer.epochs=1", "trainer.devices=2", "data.crop_padding=0")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    log_text = (run / "train.log").read_text()
    assert "epoch 1/1" in log_text and "2 process(es)" in log_text
