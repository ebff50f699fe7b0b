"""Packed training: several runs of a sweep in one process, a step of each in turn.

At batch 128 one CIFAR ResNet leaves most of an H200's arithmetic idle even replayed as a CUDA graph
(benchmarks/README.md, sections 6 and 7).  A pack trains K runs of a sweep in one process: each is
its own :func:`nfbench.engine.loop.held_steps` (the very loop a run alone goes through: its lock,
files, checkpoints, metrics and result.json), and the pack takes one step of each in turn, batch i of
every run and then batch i + 1.  On a GPU each run's turn is queued on a CUDA stream of its own, so
that its replayed graph can overlap the others'; on a CPU the turns simply run one after the other.

What belongs to the process rather than to a run is kept apart per run:

- the random state (Python's, NumPy's, torch's and the GPU's): put back before each of the run's turns
  and taken after it, so that a run draws what it draws alone, bit for bit;
- the log: each run's lines go to its own job log (train.log) and to the console under its name;
- the stop signal: the pack enters one and lends each run a view of it
  (:class:`nfbench.engine.preemption.PackStop`); each run checkpoints at its next step and ends, and
  once every run has, the pack exits as a run alone does, for the requeue to resume every run;
- a run that diverges or fails ends alone; the others go on.

Which configs may share a pack is :func:`pack_key`'s decision, and nothing else's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from nfbench import rundir
from nfbench.config import plain
from nfbench.engine import distributed
from nfbench.engine.loop import RunStart, held_steps
from nfbench.engine.preemption import PackStop, RunStopped, StopSignal
from nfbench.engine.state import Host
from nfbench.errors import USER_ERRORS

log = logging.getLogger("nfbench")


def pack_key(cfg: DictConfig) -> tuple[Optional[str], str]:
    """Which configs may train in one pack: ``(key, "")``, equal for configs that may share one, or
    ``(None, why)`` for a config that trains alone.

    A pack shares what the process holds for all its runs: the device, cuDNN's deterministic mode, one
    process per run (no DDP), no ``torch.compile`` (its caches and graphs are the process's), and at most
    one wandb run (wandb keeps one per process).  Its runs also step in lockstep and alike: the same
    network (``model.*`` and the scheme, which decides its layers), precision, memory format and
    ``trainer.cuda_graph``, the same data with its batch, subsets and augmentation (so the same steps
    per epoch) and the same epochs.  Everything else may differ between them: the seed, ``init.*``
    values, ``optim.*``, ``sched.*``, loggers, hooks, the run directory, resuming.
    """
    t, env = cfg.trainer, distributed.detect()
    processes = env.world_size if env.enabled else t.devices
    if processes > 1:
        return None, f"it trains on {processes} processes (DDP)"
    if t.compile:
        return None, "trainer.compile=true (torch.compile's caches and graphs are the process's)"
    if "wandb" in cfg.logger:
        return None, "logger=wandb (wandb keeps one run per process)"
    shared = {
        "device": t.device,
        "deterministic": t.deterministic,
        "precision": str(t.precision),
        "channels_last": t.channels_last,
        "cuda_graph": t.cuda_graph,
        "epochs": t.epochs,
        "model": plain(cfg.model),
        "scheme": cfg.init.name,
        "data": plain(cfg.data),
    }
    return json.dumps(shared, sort_keys=True, default=str), ""


def plan_packs(keys: Sequence[Optional[str]], size: int) -> list[list[int]]:
    """The sweep's jobs (indices into ``keys``, their :func:`pack_key` keys) in packs of at most ``size``
    jobs of one key, each pack where its first job stands in the sweep; a job that may share no pack
    (key None), or finds no other job to share one with, is a pack of one: trained alone, as without
    packing."""
    packs: list[list[int]] = []
    filling: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is None or size < 2:
            packs.append([i])
            continue
        pack = filling.get(key)
        if pack is None or len(pack) == size:
            pack = filling[key] = []
            packs.append(pack)
        pack.append(i)
    return packs


def _take_random(device: torch.device) -> tuple:
    """The process's random state, as the generators give it (no conversion: it is put back each turn)."""
    gpu = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), gpu


def _put_random(state: tuple, device: torch.device) -> None:
    python, numpy, cpu, gpu = state
    random.setstate(python)
    np.random.set_state(numpy)
    torch.set_rng_state(cpu)
    if gpu is not None:
        torch.cuda.set_rng_state(gpu, device)


@dataclass
class Seat:
    """One run of a pack: its steps, its random state between its turns, its CUDA stream (None on a CPU),
    and how it ended: its result, the error that ended it, or stopped on a signal."""

    name: str
    steps: Generator[None, None, dict]
    device: torch.device
    random: tuple
    stream: Optional[Any]
    outcome: Optional[dict | Exception] = None
    stopped: bool = False


class RunLogs:
    """The log lines of a pack's runs: on the console after the run's name and, given ``run_dirs``, in the
    run's own job log (train.log); lines between turns (the pack's own) on the console alone."""

    def __init__(self, names: Sequence[str], run_dirs: Optional[Sequence[Path]]) -> None:
        self.names = list(names)
        self.run_dirs = list(run_dirs) if run_dirs is not None else []
        self.current: Optional[int] = None  # the run whose turn it is
        self.handlers: list[logging.Handler] = []
        self.formatters: dict[logging.Handler, Optional[logging.Formatter]] = {}

    def __enter__(self) -> "RunLogs":
        root = logging.getLogger()
        for handler in root.handlers:
            if not isinstance(handler, logging.FileHandler):
                self.formatters[handler] = handler.formatter
                handler.setFormatter(NamedFormatter(handler.formatter, self))
        for k, run_dir in enumerate(self.run_dirs):
            handler = rundir.job_log_handler(run_dir)
            handler.addFilter(OneRun(self, k))
            root.addHandler(handler)
            self.handlers.append(handler)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        for handler, formatter in self.formatters.items():
            handler.setFormatter(formatter)

    def name(self) -> Optional[str]:
        return None if self.current is None else self.names[self.current]


class OneRun(logging.Filter):
    """A job log's filter: the lines of its run's turns only."""

    def __init__(self, logs: RunLogs, index: int) -> None:
        super().__init__()
        self.logs, self.index = logs, index

    def filter(self, record: logging.LogRecord) -> bool:
        return self.logs.current == self.index


class NamedFormatter(logging.Formatter):
    """The console's format, each line of a run's turn after the run's name."""

    def __init__(self, inner: Optional[logging.Formatter], logs: RunLogs) -> None:
        super().__init__()
        self.inner, self.logs = inner or logging.Formatter(), logs

    def format(self, record: logging.LogRecord) -> str:
        line, name = self.inner.format(record), self.logs.name()
        return line if name is None else f"[{name}] {line}"


def _turn(seat: Seat, index: int, logs: RunLogs) -> bool:
    """One step of ``seat``'s run (the first also sets it up) on its random state and stream; whether it
    has steps left.  How it ended is recorded in the seat."""
    logs.current = index
    _put_random(seat.random, seat.device)
    try:
        with torch.cuda.stream(seat.stream) if seat.stream is not None else contextlib.nullcontext():
            next(seat.steps)
        return True
    except StopIteration as end:
        seat.outcome = end.value
    except RunStopped:
        seat.stopped = True
    except Exception as e:  # this run ends; the pack goes on with the others
        if not isinstance(e, USER_ERRORS):
            log.exception("run %s failed; the other runs of the pack go on", seat.name)
        seat.outcome = e
    finally:
        seat.random = _take_random(seat.device)
        logs.current = None
    return False


def train_pack(starts: Sequence[RunStart], names: Sequence[str], job_logs: bool = False) -> list[dict | Exception]:
    """Train the runs of ``starts`` (each :func:`nfbench.engine.loop.start_of`'s, all of one
    :func:`pack_key`) in this process, a step of each in turn; each run's result, or the error that
    ended it.  ``names`` name them on the console; with ``job_logs`` their lines also go to their
    train.log.  A stop signal makes every run checkpoint at its next step; then the pack exits as a run
    alone does (Preempted, or the requeue handler that was installed before)."""
    keys = {pack_key(start.cfg)[0] for start in starts}
    if None in keys or len(keys) != 1:
        raise ValueError("train_pack takes runs that may share a pack: one pack_key, none None")
    signal = StopSignal()
    host = Host(PackStop(signal), progress=False)
    state = _take_random(starts[0].device)  # every run starts from the process's state, as alone it would
    seats = [
        Seat(
            name,
            held_steps(start, host),
            start.device,
            state,
            torch.cuda.Stream(start.device) if start.device.type == "cuda" else None,
        )
        for start, name in zip(starts, names, strict=True)
    ]
    log.info("training a pack of %d runs in lockstep (%s)", len(seats), ", ".join(names))
    with signal, RunLogs(names, [start.run_dir for start in starts] if job_logs else None) as logs:
        try:
            live = list(enumerate(seats))
            while live:
                live = [(k, seat) for k, seat in live if _turn(seat, k, logs)]
        finally:
            for seat in seats:
                seat.steps.close()  # a run left mid-way (an exception of the pack's own) lets go of its lock
        if any(seat.stopped for seat in seats):
            log.warning(
                "caught signal %s: every run of the pack is checkpointed; exiting so the job can be "
                "requeued and every run resumed",
                signal.received,
            )
            signal.exit()
    return [seat.outcome for seat in seats]  # type: ignore[misc]
