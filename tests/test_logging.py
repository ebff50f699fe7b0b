"""What a run tells its reader: plain progress lines without a terminal, the tqdm bar on one, the
summary line at the end (issue 13, item 2), and the ``logger`` config group (item 3)."""

from __future__ import annotations

import csv
import json
import math
import os
import pty
import re
import select
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from nfbench import rundir
from nfbench.engine.loop import train
from nfbench.errors import ConfigError
from tests.conftest import TINY

# 256 training images in batches of 32: 8 steps an epoch; a fold point every 2 steps.
CLI_RUN = [
    "data=digits",
    "data.train_subset=256",
    "data.test_subset=128",
    "data.batch_size=32",
    "model=resnet20",
    "model.width=4",
    "trainer.epochs=2",
    "trainer.log_every=2",
    "trainer.device=cpu",
]
PLAIN_LINE = re.compile(r"epoch (\d+)/2  step (\d+)/8  loss (\S+)  lr (\S+)  (\d+) img/s  ETA (\d+:\d\d:\d\d)")
SUMMARY = re.compile(
    r"run (\S+)  (\w+)  test top-1 (\S+)  best (val|test) top-1 (\S+)(?: \(test-selected\))?  "
    r"wall (\d+:\d\d:\d\d) \((\S+) s\)"
)


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "nfbench.cli", "train", *args]


def run_piped(args: list[str]) -> str:
    """stdout and stderr of `nfbench train ARGS`, both pipes (as under SLURM or nohup)."""
    out = subprocess.run(
        cli(args), capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def run_in_terminal(args: list[str]) -> str:
    """Everything `nfbench train ARGS` writes, with stdout and stderr on a pseudo-terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cli(args),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        close_fds=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 300)
            if not ready:
                proc.kill()
                pytest.fail("nfbench train under a pseudo-terminal printed nothing for 300 s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def check_summary(output: str, run: Path) -> None:
    """One summary line whose numbers are result.json's, as printed (2 decimals, wall time 1)."""
    result = json.loads((run / "result.json").read_text())
    found = SUMMARY.findall(output)
    assert len(found) == 1, output[-2000:]
    path, status, top1, which, best, _, wall_s = found[0]
    assert Path(path) == run and status == result["status"] == "finished"
    assert top1 == f"{result['test_top1']:.2f}"
    assert which == "test" and "(test-selected)" in output  # no validation split in this run
    assert best == f"{result['best_test_top1']:.2f}"
    assert wall_s == f"{result['wall_s']:.1f}"


def test_without_a_terminal_progress_is_plain_lines(tmp_path):
    """Piped (SLURM, nohup, CI): no carriage-return redraws, plain lines at fold points once their time
    has come (progress_every_s=0: at every one), and the summary line at the end."""
    output = run_piped([*CLI_RUN, "trainer.progress_every_s=0", f"hydra.run.dir={tmp_path}"])
    assert "\r" not in output
    lines = PLAIN_LINE.findall(output)
    assert [(int(e), int(s)) for e, s, *_ in lines] == [(e, s) for e in (1, 2) for s in (2, 4, 6, 8)]
    rows = rundir.read_metrics(tmp_path / "metrics.jsonl")
    epoch_end = [line for line in lines if line[1] == "8"]
    assert [float(line[3]) for line in epoch_end] == pytest.approx([r["lr"] for r in rows], rel=1e-3)
    assert all(math.isfinite(float(line[2])) and int(line[4]) > 0 for line in lines)
    assert lines[-1][5] == "0:00:00"  # the epoch's last step: nothing left
    check_summary(output, tmp_path)


def test_plain_lines_wait_for_their_time(tmp_path):
    """The default progress_every_s (30 s) is longer than this run: no line, the summary still comes."""
    output = run_piped([*CLI_RUN, f"hydra.run.dir={tmp_path}"])
    assert not PLAIN_LINE.findall(output) and "\r" not in output
    check_summary(output, tmp_path)


def test_on_a_terminal_the_bar_is_kept(tmp_path):
    output = run_in_terminal([*CLI_RUN, "trainer.progress_every_s=0", f"hydra.run.dir={tmp_path}"])
    assert "\r" in output and "epoch 1/2" in output  # tqdm redraws its bar
    assert not PLAIN_LINE.findall(output)
    check_summary(output.replace("\r\n", "\n"), tmp_path)


def test_progress_false_silences_bar_and_lines(tmp_path):
    output = run_in_terminal(
        [*CLI_RUN, "trainer.progress=false", "trainer.progress_every_s=0", f"hydra.run.dir={tmp_path / 'tty'}"]
    )
    assert "\r" not in output.replace("\r\n", "\n") and not PLAIN_LINE.findall(output)
    assert SUMMARY.search(output)  # the run's last word is not progress
    output = run_piped(
        [*CLI_RUN, "trainer.progress=false", "trainer.progress_every_s=0", f"hydra.run.dir={tmp_path / 'piped'}"]
    )
    assert not PLAIN_LINE.findall(output)


def test_summary_line_labels_the_validation_top1():
    from nfbench.engine.progress import summary_line

    result = {
        "status": "finished",
        "test_top1": 91.234,
        "best_val_top1": 93.456,
        "best_test_top1": 94.0,
        "wall_s": 3723.44,
    }
    line = summary_line(Path("/runs/a"), result)
    assert SUMMARY.fullmatch(line).groups() == ("/runs/a", "finished", "91.23", "val", "93.46", "1:02:03", "3723.4")
    diverged = summary_line(
        Path("/runs/b"), {"status": "diverged", "test_top1": None, "best_test_top1": None, "wall_s": 1.0}
    )
    assert "diverged" in diverged and "test top-1 n/a" in diverged


def test_summary_line_with_a_validation_split(make_cfg, tmp_path, caplog):
    """With data.val_size the summary's best is the validation top-1, and so is TensorBoard's hparam metric."""
    with caplog.at_level("INFO", logger="nfbench"):
        result = train(make_cfg([*TINY, "data.val_size=64"], tmp_path))
    found = [SUMMARY.fullmatch(r.getMessage()) for r in caplog.records if SUMMARY.fullmatch(r.getMessage())]
    assert len(found) == 1
    path, status, top1, which, best, _, _ = found[0].groups()
    assert (Path(path), status, which) == (tmp_path, "finished", "val")
    assert (top1, best) == (f"{result['test_top1']:.2f}", f"{result['best_val_top1']:.2f}")
    scalars = tensorboard_scalars(tmp_path)
    assert scalars["hparam/best_val_top1"][0][1] == pytest.approx(result["best_val_top1"])
    assert scalars["hparam/test_top1_at_best_val"][0][1] == pytest.approx(result["test_top1_at_best_val"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.progress_every_s=-1"], r"trainer.progress_every_s=-1.0 is not allowed: must be >= 0"),
    ],
)
def test_bad_logging_values_are_refused_before_training(make_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg([*TINY, *overrides], tmp_path))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_an_unknown_wandb_mode_is_refused_by_hydra(make_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        make_cfg([*TINY, "logger=wandb", "logger.wandb.mode=cloud"])
    assert "full_key: logger.wandb.mode" in str(e.value.__cause__)
    assert "expected one of [online, offline, disabled]" in str(e.value.__cause__)


# --- loggers ---------------------------------------------------------------------------------------


def tensorboard_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb")).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tensorboard_hparams(run: Path) -> dict:
    """The hyperparameters of the hparams plugin's session-start record, as {name: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run / "tb")).Reload()
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            return {k: getattr(v, v.WhichOneof("kind")) for k, v in data.session_start_info.hparams.items()}
    return {}


def read_csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_tensorboard_logger_writes_scalars_and_hparams(make_cfg, tmp_path):
    result = train(make_cfg([*TINY, "optim.lr=0.05"], tmp_path))
    rows = rundir.read_metrics(tmp_path / "metrics.jsonl")
    scalars = tensorboard_scalars(tmp_path)
    for key, tag in (("test_top1", "test/top1"), ("train_loss", "train/loss"), ("lr", "lr")):
        assert [s for s, _ in scalars[tag]] == [1, 2]
        assert [v for _, v in scalars[tag]] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert [s for s, _ in scalars["train/loss_step"]] == [7, 15]  # each epoch's last step (log_every > 8)
    assert scalars["hparam/test_top1"][0][1] == pytest.approx(result["test_top1"])
    assert scalars["hparam/best_test_top1"][0][1] == pytest.approx(result["best_test_top1"])
    hparams = tensorboard_hparams(tmp_path)
    assert hparams["optim.lr"] == pytest.approx(0.05) and hparams["init.name"] == "convshort"
    assert hparams["model.width"] == 4 and hparams["data.batch_size"] == 32
    assert not any(k.startswith("logger") for k in hparams)
    assert not (tmp_path / "metrics.csv").exists()


def test_csv_logger_rows_equal_metrics_jsonl(make_cfg, tmp_path):
    train(make_cfg([*TINY, "logger=csv"], tmp_path))
    rows = rundir.read_metrics(tmp_path / "metrics.jsonl")
    assert read_csv_rows(tmp_path / "metrics.csv") == rows and len(rows) == 2
    assert not (tmp_path / "tb").exists()


def test_csv_logger_drops_rows_no_checkpoint_holds(make_cfg, tmp_path, monkeypatch):
    """A crash between the table's row and the checkpoint: the resumed run writes that epoch again, once."""
    from tests.test_train import train_killed_after

    cfg = [*TINY, "logger=csv", "trainer.epochs=3"]
    train_killed_after(1, make_cfg(cfg, tmp_path), monkeypatch)
    table = tmp_path / "metrics.csv"
    with open(table, "a") as f:  # epoch 2's row, written just before the crash that lost its checkpoint
        f.write(f"2{',0.5' * (len(read_csv_rows(table)[0]) - 1)}\n")
    train(make_cfg(cfg, tmp_path))
    rows = rundir.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and read_csv_rows(table) == rows


def test_no_logger_writes_nothing_of_its_own(make_cfg, tmp_path):
    train(make_cfg([*TINY, "logger=none"], tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "env.json",
        "metrics.jsonl",
        "result.json",
    ]


def test_two_loggers_at_once(make_cfg, tmp_path):
    cfg = make_cfg([*TINY, "logger=[tensorboard,csv]", "logger.csv.file=table.csv"], tmp_path)
    assert set(k for k, v in cfg.logger.items() if v is not None) == {"tensorboard", "csv"}
    train(cfg)
    rows = rundir.read_metrics(tmp_path / "metrics.jsonl")
    assert read_csv_rows(tmp_path / "table.csv") == rows
    assert [v for _, v in tensorboard_scalars(tmp_path)["test/top1"]] == pytest.approx([r["test_top1"] for r in rows])


def test_spp_goes_through_the_loggers(make_cfg, tmp_path):
    """trainer.log_spp_every logs through the logging interface: TensorBoard gets it, a CSV table does not."""
    train(make_cfg([*TINY, "logger=[tensorboard,csv]", "trainer.log_spp_every=1"], tmp_path))
    assert [s for s, _ in tensorboard_scalars(tmp_path)["spp_fwd_var/block_00"]] == [0, 8]
    assert not any(k.startswith("spp") for k in read_csv_rows(tmp_path / "metrics.csv")[0])


def test_wandb_without_the_package_is_a_config_error(make_cfg, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"logger=wandb needs the wandb package: pip install 'nfbench\[wandb\]'"):
        train(make_cfg([*TINY, "logger=wandb"], tmp_path))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def wandb_records(run: Path) -> dict[str, list]:
    """The history rows, summary updates and config of the offline run under ``run``/wandb, read from
    its transaction log (LevelDB's log format: 7-byte record headers in 32 KiB blocks, after a 7-byte file
    header), whose records are wandb's protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    (log,) = run.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, buf, block = log.read_bytes(), 7, b"", 32768
    out: dict[str, list] = {"history": [], "summary": [], "config": []}
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        buf, pos = buf + data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record.FromString(buf)
            buf = b""
            which = record.WhichOneof("record_type")
            if which == "history":
                out["history"].append(
                    {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
                )
            elif which == "summary":
                out["summary"] += [
                    ("/".join(u.nested_key) or u.key, json.loads(u.value_json)) for u in record.summary.update
                ]
            elif which == "run":
                out["config"] += [(u.key, json.loads(u.value_json)) for u in record.run.config.update]
    return out


def test_wandb_offline(make_cfg, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = train(make_cfg([*TINY, "logger=wandb", "logger.wandb.project=nfbench-test"], tmp_path))
    wandb.teardown()  # run.finish() can return before wandb's service has written the log; this waits for it
    rows = rundir.read_metrics(tmp_path / "metrics.jsonl")
    records = wandb_records(tmp_path)
    epochs = [h for h in records["history"] if "test/top1" in h]
    assert [h["epoch"] for h in epochs] == [1, 2]
    assert [h["test/top1"] for h in epochs] == pytest.approx([r["test_top1"] for r in rows])
    summary = dict(records["summary"])
    assert summary["best_test_top1"] == pytest.approx(result["best_test_top1"])
    config = dict(records["config"])
    assert config["optim"]["lr"] == pytest.approx(0.01) and config["init"]["name"] == "convshort"
    assert "logger" not in config
