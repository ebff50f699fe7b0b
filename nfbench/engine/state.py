"""The state training works on: the run's record, the loop's objects, one epoch's progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
import math
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Optional
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from nfbench import rundir
from nfbench.data.sets import DataSource
from nfbench.engine.distributed import DistEnv
from nfbench.engine.metrics import EpochMetrics
from nfbench.engine.graph import GraphedStep
from nfbench.loggers import Loggers
from nfbench.engine.preemption import StopSignal
from nfbench.engine.progress import Progress
from nfbench.schemes import Scheme
from nfbench.engine.evaluate import StopPoll

if TYPE_CHECKING:
    from timm.data import Mixup


@dataclass
class EpochProgress:
    """Running sums of one epoch: where a mid-epoch checkpoint stopped and what it had seen."""

    batches_done: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    rng: list = field(default_factory=list)  # per-rank RNG states at batches_done


@dataclass(frozen=True)
class StepSettings:
    """The config the batch loop reads, read once: a DictConfig lookup per step costs as much host time
    as a kernel launch."""

    channels_last: bool
    log_every: int
    checkpoint_every: int  # trainer.checkpoint_every_steps; 0: at epochs' ends only
    stop_every: int  # look for a stop signal every step in one process, at log steps with several
    clip: bool  # optim.clip_grad_norm or optim.agc
    per_step: bool  # the scheduler steps every step (else every epoch)
    epochs: int

    @classmethod
    def of(cls, cfg: DictConfig, env: DistEnv) -> "StepSettings":
        t = cfg.trainer
        return cls(t.channels_last, t.log_every, t.checkpoint_every_steps, t.log_every if env.enabled else 1,
                   cfg.optim.clip_grad_norm > 0 or cfg.optim.agc > 0, cfg.sched.per_step, t.epochs)


@dataclass
class Record:
    """What the run's checkpoints and result.json say beside the objects' states: where the run lives,
    its resolved config and data, what best.pt is selected on and the best so far, its wall time, its
    origin and its history.  result.json and metrics.jsonl are written from this record, which every
    checkpoint holds, never read back from the files."""

    run_dir: Path
    config: dict  # the resolved config
    select: str  # val_top1 when there is a validation split, else test_top1 (an optimistic figure)
    data: dict  # what it trains on (nfbench.data.source.identity), checked on resume
    best_top1: float = -math.inf
    best_from: int = 1  # the first epoch best.pt is selected from (a branch that could not carry its best: later)
    wall_before: float = 0.0  # the seconds of the processes this run resumed
    resumed_from: Optional[dict] = None  # the run a branch continued (rundir.branched_from)
    history: list[dict] = field(default_factory=list)  # one metrics row per completed epoch: the record
    t_start: float = field(default_factory=time.perf_counter)  # this process's clock, from its first epoch

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / rundir.CHECKPOINTS

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start


@dataclass
class Data:
    """The run's data source and loaders; ``data.batch_size`` is the global batch, split over the ranks."""

    src: DataSource
    train: DataLoader
    test: DataLoader
    val: Optional[DataLoader]


@dataclass
class Loop:
    """The state training works on, built once by :func:`_build_loop`; each step, log step and
    checkpoint is a plain function of it."""

    cfg: DictConfig
    env: DistEnv
    device: torch.device
    settings: StepSettings
    record: Record
    scheme: Scheme
    model: nn.Module  # the network whose state is checkpointed
    net: nn.Module  # its forward callable: DDP-wrapped and/or compiled after a resume (:func:`_wrap`)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    mixup: Optional[Mixup]  # mixup and cutmix draws, or None
    criterion: nn.Module
    amp: dict  # torch.autocast's arguments
    progress: Progress
    loggers: Loggers = field(default_factory=Loggers)
    stop: StopSignal = field(default_factory=StopSignal)
    graphed: Optional[GraphedStep] = None  # trainer.cuda_graph: the step captured and replayed


@dataclass
class Pass:
    """One epoch's pass over the training set, under way: its number (from 0) and steps, the loss and
    accuracy on the device, its clock (a resumed pass counts the seconds before) and its stop poll."""

    epoch: int
    steps: int
    metrics: EpochMetrics
    t0: float
    poll: StopPoll

    @property
    def first_step(self) -> int:
        return self.epoch * self.steps

    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def best_row(history: list[dict], select: str, best_from: int = 1) -> Optional[dict]:
    """The row best.pt is selected at: the first epoch of the highest ``select`` from epoch ``best_from`` on."""
    rows = [row for row in history if row["epoch"] >= best_from]
    return max(rows, key=lambda row: row[select]) if rows else None  # max keeps the first of equal values


def best_figures(history: list[dict], select: str, best_from: int = 1) -> dict:
    """result.json's best figures, selected on ``select`` (val_top1 or test_top1) as best.pt is: the
    first epoch of the highest value (from epoch ``best_from`` on).  On validation: its best top-1, that
    epoch and the test top-1 there (the number to report); on the test set: ``best_test_top1``, an
    optimistic figure, not a result."""
    best = best_row(history, select, best_from) or {}
    figures = {"best_selected_on": select, "best_epoch": best.get("epoch")}
    if best_from > 1:  # a branch whose inherited best could not come with its weights (nfbench.engine.loop._resume)
        figures["best_selected_from_epoch"] = best_from
    if select == "val_top1":
        return {**figures, "best_val_top1": best.get("val_top1"), "test_top1_at_best_val": best.get("test_top1")}
    return {**figures, "best_test_top1": best.get("test_top1")}


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
