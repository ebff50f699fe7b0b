"""The state training works on: the run's record, the loop's objects, one epoch's progress."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol

import torch
from omegaconf import DictConfig
from torch import nn

from nfbench import rundir
from nfbench.data.sets import DataSource
from nfbench.engine.distributed import DistEnv
from nfbench.engine.evaluate import StopPoll
from nfbench.engine.graph import GraphedStep
from nfbench.engine.hooks import Hook
from nfbench.engine.metrics import EpochMetrics
from nfbench.engine.preemption import PackStop, StopSignal
from nfbench.engine.progress import Progress
from nfbench.engine.step import EagerStep
from nfbench.errors import ConfigError
from nfbench.loggers import Loggers
from nfbench.rng import rng_state
from nfbench.schemes import Scheme

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
    per_step: bool  # the scheduler steps every step (else every epoch)
    epochs: int

    @classmethod
    def of(cls, cfg: DictConfig, env: DistEnv) -> "StepSettings":
        t = cfg.trainer
        return cls(
            t.channels_last,
            t.log_every,
            t.checkpoint_every_steps,
            t.log_every if env.enabled else 1,
            cfg.sched.per_step,
            t.epochs,
        )


@dataclass(frozen=True)
class Host:
    """What the driver of a run lends it: the stop signal it polls between steps (entered while it
    trains) and whether it may draw a progress bar.  A run alone has a signal of its own; a pack
    (nfbench/engine/pack.py) lends each of its runs a view of its one signal, and no bar (several
    would share one terminal line)."""

    stop: StopSignal | PackStop
    progress: bool = True


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

    def state_dict(self, wall_s: Optional[float] = None) -> dict:
        """What a checkpoint holds of the record (``wall_s``: the figure an epoch's row already has)."""
        return {
            "best_on": self.select,
            "best_top1": self.best_top1,
            "wall_s": self.wall_s() if wall_s is None else wall_s,
            "config": self.config,
            "resumed_from": self.resumed_from,
            "history": self.history,
            "best_from": self.best_from,
            "data": self.data,
        }

    def load_state_dict(self, state: dict) -> None:
        """The standing of the checkpointed run: its best so far, its seconds, where best.pt is selected from.
        The history and the origin are not taken as they are: :func:`nfbench.engine.loop._resume` checks the
        one against metrics.jsonl and works the other out (:func:`nfbench.rundir.branched_from`)."""
        # Checkpoints written before data.val_size hold the (test-selected) best under another name.
        self.best_top1 = state["best_top1"] if "best_top1" in state else state["best_test_top1"]
        self.wall_before, self.best_from = state["wall_s"], state.get("best_from") or 1


class Stateful(Protocol):
    """What a checkpoint is made of: torch's modules, optimisers, schedulers and grad scalers, and the run's
    :class:`Record`, each saved and restored through its own pair."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


# The entries of a checkpoint, in the order every nfbench since checkpoint version 3 writes them.
CHECKPOINT_ORDER = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "best_on",
    "best_top1",
    "wall_s",
    "rng",
    "partial",
    "config",
    "resumed_from",
    "history",
    "best_from",
    "data",
)


def checkpoint_state(
    objects: Mapping[str, Stateful], record: Record, epoch: int, partial: Optional[dict], wall_s: Optional[float] = None
) -> dict:
    """A checkpoint of a run: every object's ``state_dict`` under its name, the record's, and where it stands.

    ``epoch`` counts the epochs completed (the number of the last one, from 1); ``partial`` is how far into
    the next one a mid-epoch checkpoint is (its running sums and every rank's RNG state), None at an epoch's
    end.  ``rng`` is this process's RNG state, for the record: an epoch reseeds from (seed, epoch, rank).
    :func:`restore_checkpoint` reads it back."""
    entries = {
        **{name: obj.state_dict() for name, obj in objects.items()},
        **record.state_dict(wall_s),
        "epoch": epoch,
        "rng": rng_state(),
        "partial": partial,
    }
    return {key: entries[key] for key in (*CHECKPOINT_ORDER, *(k for k in entries if k not in CHECKPOINT_ORDER))}


@dataclass(frozen=True)
class Restored:
    """Where a restored checkpoint left its run (see :func:`checkpoint_state`)."""

    epoch: int  # the epochs completed
    partial: Optional[dict]  # how far into the next epoch, or None
    history: Optional[list[dict]] = None  # one row per completed epoch; None: written before nfbench kept it


def restore_checkpoint(
    state: dict, objects: Mapping[str, Stateful], record: Record, source: Optional[Path] = None
) -> Restored:
    """Load a checkpoint written from :func:`checkpoint_state` into the run's objects (in place, before DDP and
    ``torch.compile`` wrap the model) and its record; return where the run stood.  A checkpoint of another
    network (other classes, channels or layers) is a ConfigError naming ``source``."""
    for name, obj in objects.items():
        try:
            obj.load_state_dict(state[name])
        except (RuntimeError, ValueError, KeyError) as e:
            first = " ".join(str(e).split())[:300]
            raise ConfigError(
                f"cannot resume {source or 'the checkpoint'}: it holds another network than this run "
                f"builds ({first}); resume with the model, scheme and data it was trained with, or "
                f"start a fresh run in another hydra.run.dir"
            ) from None
    record.load_state_dict(state)
    return Restored(state["epoch"], state.get("partial") or None, state.get("history"))


@dataclass
class Data:
    """The run's data source and loaders; ``data.batch_size`` is the global batch, split over the ranks."""

    src: DataSource
    # DataLoaders, or nfbench.data.device's and gpu_decode's loaders (the same interface: iteration, len, .sampler)
    train: Any
    test: Any
    val: Any
    # Where the images are decoded, as data.decode resolved (nfbench.data.gpu_decode.decode_choice): "cpu" or
    # "gpu"; None for data sets it does not apply to.  Checkpoints record it (nfbench.data.source.identity).
    decode: Optional[str] = None


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
    stop: StopSignal | PackStop = field(default_factory=StopSignal)
    # The training step, built over the restored model (nfbench.engine.loop._wrap): eager, or captured in a
    # CUDA graph (trainer.cuda_graph); either is step(x, y) -> (loss, top-1 hits) over nfbench.engine.step.
    step: Optional[EagerStep | GraphedStep] = None
    hooks: list[Hook] = field(default_factory=list)  # the per-epoch hooks selected (nfbench/engine/hooks.py)

    def stateful(self) -> dict[str, Stateful]:
        """The objects a checkpoint holds the states of, by the names it holds them under."""
        return {"model": self.model, "optimizer": self.opt, "scheduler": self.sched, "scaler": self.scaler}


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
