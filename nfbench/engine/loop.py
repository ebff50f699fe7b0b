"""The training loop: ``train(cfg) -> dict of final metrics``, used by every entry point.

Read top to bottom: :func:`run_steps` sets up (ranks, run directory, data, model and scheme,
optimiser), resumes, runs the epochs (train one epoch, evaluate, log, checkpoint) and writes the
result.  One process or many (DDP), the same code runs; only rank 0 writes files, logs and
progress bars.  What a checkpoint holds, and how it is restored, is :mod:`nfbench.rundir`'s.

:func:`run_steps` is a generator, one training step per ``next()``: :func:`train` runs it to its end
(:func:`run_alone`), and a pack (nfbench/engine/pack.py) takes a step of each of its runs in turn.
A run alone and a run of a pack go through this one loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generator, Optional, Sized, cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nfbench import rundir
from nfbench.config import plain, typed
from nfbench.data.gpu_decode import decode_choice
from nfbench.data.loaders import build_loaders, eval_loader
from nfbench.data.source import build_source, identity
from nfbench.engine import distributed
from nfbench.engine.distributed import DistEnv
from nfbench.engine.epoch import Diverged, checkpoint_of, gather_rng, save_last, train_one_epoch
from nfbench.engine.evaluate import StopPoll, evaluate
from nfbench.engine.graph import GraphedStep, check_device
from nfbench.engine.hooks import build_hooks
from nfbench.engine.optim import build_optimizer, build_scheduler
from nfbench.engine.preemption import StopSignal
from nfbench.engine.progress import Progress, summary_line
from nfbench.engine.runtime import pick_device, resolve_run_dir, seed_all, set_deterministic
from nfbench.engine.state import (
    Data,
    EpochProgress,
    Host,
    Loop,
    Record,
    Restored,
    StepSettings,
    best_figures,
    best_row,
    count_params,
    restore_checkpoint,
)
from nfbench.engine.step import AMP_DTYPES, EagerStep, StepObjects
from nfbench.engine.validation import validate
from nfbench.loggers import Loggers
from nfbench.models import ModelPlan
from nfbench.rng import rng_state
from nfbench.schemes import Scheme

if TYPE_CHECKING:
    from timm.data import Mixup

log = logging.getLogger("nfbench")


# The result.json numbers a logger's hyperparameter table shows beside each run's config.
FINAL_METRICS = (
    "test_top1",
    "test_top5",
    "test_loss",
    "val_top1",
    "val_loss",
    "train_top1",
    "train_loss",
    "best_val_top1",
    "test_top1_at_best_val",
    "best_test_top1",
    "best_epoch",
    "epochs",
    "wall_s",
)


def train(cfg: DictConfig, plan: Optional[ModelPlan] = None) -> dict:
    """Train and evaluate the configured model; return the final metrics (also written to result.json).

    ``plan`` is :func:`nfbench.engine.validation.validate`'s for ``cfg`` when the caller validated already
    (the ``nfbench`` command, to refuse a bad value before torch loads); else it is made here.
    With ``trainer.devices=N > 1`` (and no launcher around), starts N processes on this machine
    and returns rank 0's result.
    """
    start = start_of(cfg, plan)
    if cfg.trainer.devices > 1 and not start.env.enabled:
        with rundir.RunDirLock(start.run_dir):  # the launcher of the N processes holds it for them
            return _spawn(cfg)
    return run_alone(held_steps(start))


@dataclass(frozen=True)
class RunStart:
    """What a run starts from once its config has passed the checks made before any file: the config and
    its model plan, the processes it trains on, the device asked for and the run directory."""

    cfg: DictConfig
    plan: ModelPlan
    env: DistEnv
    device: torch.device
    run_dir: Path


def start_of(cfg: DictConfig, plan: Optional[ModelPlan] = None) -> RunStart:
    """``cfg`` checked (a device this machine lacks, or a CUDA graph where none can run, is refused before
    any file or process) and where its run lives: under Hydra, the job's output directory."""
    plan = plan or validate(cfg)
    env = distributed.detect()
    device = pick_device(cfg.trainer.device)
    if cfg.trainer.cuda_graph:
        check_device(device, env.world_size if env.enabled else cfg.trainer.devices)
    return RunStart(cfg, plan, env, device, resolve_run_dir(cfg))


def held_steps(start: RunStart, host: Optional[Host] = None) -> Generator[None, None, dict]:
    """The run's steps (:func:`run_steps`) on this rank's device, its run directory held all along: one run
    per run directory, rank 0 holding it until the run ends."""
    with rundir.RunDirLock(start.run_dir) if start.env.is_main else contextlib.nullcontext():
        rank_device = distributed.setup(start.env, start.device.type)
        try:
            return (yield from run_steps(start, rank_device, host))
        finally:
            distributed.teardown()


def run_alone(steps: Generator[None, None, dict]) -> dict:
    """Every step of a run (:func:`run_steps`) in turn; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def _resume_state(cfg: DictConfig, run_dir: Path, world_size: int) -> Optional[tuple[Path, dict]]:
    """The checkpoint to continue and its state, refused (ConfigError) if ``cfg`` would change its trajectory."""
    found = rundir.load_resume_state(run_dir, cfg.trainer.resume)
    if found is not None:
        rundir.check_resume(found[1], plain(cfg), found[0], world_size)
    return found


def _spawn(cfg: DictConfig) -> dict:
    run_dir = resolve_run_dir(cfg)
    container = plain(cfg)
    container["trainer"]["run_dir"] = str(run_dir)  # the workers live outside Hydra: give them the directory
    _resume_state(cfg, run_dir, cfg.trainer.devices)  # a refusal in one line here, not in a worker's traceback
    distributed.spawn(cfg.trainer.devices, _spawned_worker, container)
    return rundir.read_json(run_dir / "result.json")


def _spawned_worker(container: dict) -> None:
    cfg = typed(container)
    if distributed.detect().is_main:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
        rundir.log_to_file(Path(cfg.trainer.run_dir))
    train(cfg)


def run_steps(start: RunStart, device: torch.device, host: Optional[Host] = None) -> Generator[None, None, dict]:
    """One run on this process's rank (``device``), a training step per ``next()``: the first does the setup
    and resume too; the result is the generator's value.  ``host``: what a pack lends its runs (nothing
    else of the process is shared with the pack's other runs); None, a run alone."""
    cfg, env = start.cfg, start.env
    run_dir = Path(distributed.broadcast_object(str(start.run_dir)))
    # Every check comes before any file of the run directory changes: a refusal leaves the run as it was.
    resumed = _resume_state(cfg, run_dir, env.world_size)
    if resumed is None:
        rundir.refuse_to_start_over(run_dir)
    set_deterministic(cfg.trainer.deterministic)
    if not env.is_main:
        log.setLevel(logging.WARNING)
    data = _build_data(cfg, env, device)
    loop = _build_loop(cfg, env, device, data, run_dir, start.plan, host or Host(StopSignal()))
    start_epoch, partial, branch_best = _resume(loop, resumed)
    if env.is_main:
        _write_run_files(loop, device, branch_best)
    finished = _finished_result(loop, start_epoch, partial)
    if finished is not None:
        return finished
    _wrap(loop)
    _log_setup(loop, data)
    with loop.stop:
        status, divergence = yield from _run_epochs(loop, data, start_epoch, partial)
    return _finish(loop, status, divergence)


def _build_data(cfg: DictConfig, env: DistEnv, device: torch.device) -> Data:
    src = build_source(cfg.data)
    pin = device.type == "cuda"
    # trainer.cuda_graph on CUDA: the batches too are built in a graph, RandAugment on the device.
    capture = cfg.trainer.cuda_graph and device.type == "cuda"
    train_loader, test_loader = build_loaders(
        cfg.data, src, cfg.seed, env.rank, env.world_size, pin_memory=pin, device=device, capture=capture
    )
    val_loader = (
        None
        if src.val is None
        else eval_loader(cfg.data, src, src.val, env.rank, env.world_size, pin_memory=pin, device=device)
    )
    decode = decode_choice(cfg.data, src, device)
    if decode is not None:
        log.info(
            "data.decode=%s: %s",
            cfg.data.decode,
            f"each batch decoded and augmented on {device}"
            if decode == "gpu"
            else f"images decoded and augmented in {cfg.data.num_workers} DataLoader worker(s)",
        )
    return Data(src, train_loader, test_loader, val_loader, decode)


def _write_run_files(loop: Loop, device: torch.device, branch_best: Optional[dict]) -> None:
    """The run's files, once every check has passed: env.json, config.yaml, metrics.jsonl as the record
    holds it, and for a branch the best it inherited (``branch_best``, :func:`_branch_best`)."""
    run_dir, record = loop.record.run_dir, loop.record
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.remove_stale_temporaries(run_dir)  # this process holds the run directory's lock
    rundir.write_json(
        run_dir / "env.json",
        {**rundir.environment(device, world_size=loop.env.world_size), "data_fingerprint": record.data["fingerprint"]},
    )
    rundir.atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(loop.cfg, resolve=True).encode())
    if record.history or (run_dir / "metrics.jsonl").exists():
        rundir.write_metrics(run_dir / "metrics.jsonl", record.history)
    if branch_best is not None:
        best = best_row(record.history, record.select)
        assert best is not None  # a branch inherits the rows of its best epoch
        rundir.save_best(record.ckpt_dir, branch_best, best)


def _build_loop(
    cfg: DictConfig, env: DistEnv, device: torch.device, data: Data, run_dir: Path, plan: ModelPlan, host: Host
) -> Loop:
    """The planned model and its scheme's init (the same seed on every rank, before DDP and the optimiser
    see the parameters), optimiser, scheduler, grad scaler, mixup and loss; the stop signal ``host`` lends."""
    tcfg = cfg.trainer
    seed_all(cfg.seed)
    scheme = cast(Scheme, plan.scheme)  # validate() planned the model with a Scheme
    net = plan.build(data.src.num_classes, data.src.in_chans, data.src.image_size).to(device)
    if tcfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = build_optimizer(net, cfg.optim, device)
    sched = build_scheduler(opt, cfg.sched, tcfg.epochs, len(data.train))
    scaler = torch.amp.GradScaler(device.type, enabled=tcfg.precision == "fp16")
    amp = dict(
        device_type=device.type, dtype=AMP_DTYPES.get(tcfg.precision, torch.float32), enabled=tcfg.precision != "fp32"
    )
    mixup, criterion = _mixup_and_loss(tcfg, data.src.num_classes)
    # best.pt and the best figures: chosen on the validation split when there is one; else on the
    # test set, an optimistic figure, named for what it is (best_test_top1).
    select = "val_top1" if data.val is not None else "test_top1"
    record = Record(run_dir, plain(cfg), select, identity(data.src, data.decode))
    progress = Progress(tcfg.progress and env.is_main and host.progress, tcfg.epochs, tcfg.progress_every_s)
    return Loop(
        cfg,
        env,
        device,
        StepSettings.of(cfg, env),
        record,
        scheme,
        net,
        net,
        opt,
        sched,
        scaler,
        mixup,
        criterion,
        amp,
        progress,
        stop=host.stop,
    )


def _mixup_and_loss(tcfg: DictConfig, num_classes: int) -> tuple[Optional[Mixup], nn.Module]:
    """timm's Mixup with soft-target cross-entropy when mixup or cutmix is on; else plain cross-entropy."""
    if tcfg.mixup_alpha > 0 or tcfg.cutmix_alpha > 0:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        mixup = Mixup(
            mixup_alpha=tcfg.mixup_alpha,
            cutmix_alpha=tcfg.cutmix_alpha,
            label_smoothing=tcfg.label_smoothing,
            num_classes=num_classes,
        )
        return mixup, SoftTargetCrossEntropy()
    return None, nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)


def _resume(loop: Loop, resumed: Optional[tuple[Path, dict]]) -> tuple[int, Optional[EpochProgress], Optional[dict]]:
    """Continue ``resumed`` (this run directory's own last.pt, else trainer.resume): check that it trained on
    this data, restore the objects and the record (its history checked against metrics.jsonl); return the
    epoch to start from (counting from 0), how far into it a checkpoint got, and for a branch the state to
    save as its best.pt (:func:`_branch_best`).  Writes nothing."""
    if resumed is None:
        return 0, None, None
    source, state = resumed
    record = loop.record
    rundir.check_data(state, record.data, source)
    restored = restore_checkpoint(state, loop.stateful(), record, source)
    record.resumed_from = rundir.branched_from(source, state, record.run_dir)
    record.history = rundir.reconcile_history(
        record.run_dir / "metrics.jsonl", restored.history, restored.epoch, source
    )
    branch_best = (
        _branch_best(loop, source, state, restored) if record.resumed_from and not state.get("resumed_from") else None
    )
    partial = EpochProgress(**restored.partial) if restored.partial else None
    log.info("resumed from %s: epoch %d, step %d", source, restored.epoch + 1, partial.batches_done if partial else 0)
    return restored.epoch, partial, branch_best


def _branch_best(loop: Loop, source: Path, state: dict, restored: Restored) -> Optional[dict]:
    """A branch (trainer.resume=OTHER_RUN into a new directory) inherits the history of the run it continues,
    and so the best epoch in it; the state to save as its best.pt, so that best.pt, model.safetensors and
    result.json name the same epoch: the checkpoint itself when it is that epoch's end, else the best.pt
    beside it when that is the epoch.  Without either (or without an inherited history) best.pt is
    selected afresh from the branch's first epoch, and result.json says so (``best_selected_from_epoch``)."""
    record = loop.record
    best = best_row(record.history, record.select, record.best_from)
    if best is not None and best["epoch"] == restored.epoch and not restored.partial:
        return checkpoint_of(loop, restored.epoch, None)
    beside = source.parent / rundir.BEST
    if best is not None and beside.is_file() and beside != source:
        try:
            found = rundir.load_checkpoint(beside)
        except rundir.CorruptCheckpointError as e:
            log.warning("%s", e)
        else:
            if found["epoch"] == best["epoch"]:
                return {
                    **found,
                    "config": record.config,
                    "resumed_from": record.resumed_from,
                    "history": record.history[: best["epoch"]],
                    "data": record.data,
                }  # the record at that epoch
    record.best_top1, record.best_from = -math.inf, restored.epoch + 1
    log.warning(
        "branch of %s: the best epoch of the history it continues (%s) has no checkpoint to bring along; "
        "best.pt is selected from epoch %d on",
        source,
        best["epoch"] if best else "none",
        record.best_from,
    )
    return None


def _wrap(loop: Loop) -> None:
    """The forward callable (DDP across ranks, torch.compile) or the captured step (trainer.cuda_graph)
    over the restored model, and the loggers."""
    tcfg = loop.cfg.trainer
    if loop.env.enabled:
        device = loop.device
        loop.net = nn.parallel.DistributedDataParallel(
            loop.net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if loop.cfg.trainer.compile:
        loop.net = cast(nn.Module, torch.compile(loop.net, mode=loop.cfg.trainer.compile_mode))  # an OptimizedModule
    if tcfg.cuda_graph:  # refuses DDP and compile (config.check_values): the graph replays the model itself
        objects = StepObjects(loop.model, loop.opt, loop.criterion, loop.amp, loop.scaler, loop.cfg.optim)
        loop.step = GraphedStep(objects, tcfg.channels_last)
    else:
        objects = StepObjects(loop.net, loop.opt, loop.criterion, loop.amp, loop.scaler, loop.cfg.optim)
        loop.step = EagerStep(objects, loop.device, tcfg.channels_last, loop.mixup)
    if loop.env.is_main:
        loop.loggers = Loggers.from_config(loop.cfg, loop.record.run_dir, loop.record.history)
    loop.hooks = build_hooks(loop.cfg.hooks, loop.record.run_dir)


def _log_setup(loop: Loop, data: Data) -> None:
    cfg, src = loop.cfg, data.src
    log.info(
        "%s / %s (%s weights) on %s: %.2fM parameters, %d train / %d validation / %d test images, %d process(es) on %s",
        cfg.model.name,
        cfg.init.name,
        loop.scheme.weights,
        cfg.data.name,
        count_params(loop.model) / 1e6,
        len(cast(Sized, src.train)),  # torch types a Dataset without __len__; these have one
        len(cast(Sized, src.val)) if src.val is not None else 0,
        len(cast(Sized, src.test)),
        loop.env.world_size,
        loop.device,
    )


def _run_epochs(
    loop: Loop, data: Data, start_epoch: int, partial: Optional[EpochProgress]
) -> Generator[None, None, tuple[str, Optional[dict]]]:
    """Train, evaluate, record and checkpoint each epoch from ``start_epoch`` on (``partial``: how far into it
    a checkpoint got), yielding between steps; return how the run ended: ("finished", None) or
    ("diverged", what diverged)."""
    loop.record.t_start = time.perf_counter()
    # Validation, then test: (split, loader, the batches every rank has, where a stop signal is checked).
    evaluations = [
        (split, loader, distributed.min_over_ranks(len(loader), loop.device))
        for split, loader in (("val", data.val), ("test", data.test))
        if loader is not None
    ]
    for epoch in range(start_epoch, loop.settings.epochs):
        _begin_epoch(loop, data, epoch)
        lr = loop.opt.param_groups[0]["lr"]
        try:
            stats = yield from train_one_epoch(loop, data.train, epoch, partial)
        except Diverged as d:
            _log_divergence(loop, d.info)
            return "diverged", d.info
        metrics = _evaluate_epoch(loop, evaluations, epoch, stats)
        partial = None
        _end_epoch(loop, epoch, lr, stats, metrics)
    return "finished", None


def _begin_epoch(loop: Loop, data: Data, epoch: int) -> None:
    # Everything random in an epoch is a function of (seed, epoch, rank): resuming is exact.
    seed_all(loop.cfg.seed, epoch, loop.env.rank)
    data.train.sampler.set_epoch(epoch)
    every = loop.cfg.trainer.log_spp_every
    if loop.env.is_main and every and epoch % every == 0:
        from nfbench.analysis.spp import log_spp  # leaves weights, buffers and RNG as they were

        log_spp(loop.loggers, loop.model, loop.cfg, data.test, data.src.num_classes, epoch * len(data.train))


def _log_divergence(loop: Loop, info: dict) -> None:
    log.error(
        "training diverged: %s at epoch %d, step %d (lr %.4g); nothing was saved after it: %s",
        f"non-finite loss {info['loss']}" if info["loss"] is not None else "non-finite weights",
        info["epoch"],
        info["step"],
        info["lr"],
        rundir.kept_checkpoint(loop.record.ckpt_dir),
    )


def _evaluate_epoch(loop: Loop, evaluations: list, epoch: int, stats: EpochProgress) -> dict:
    """The validation and test metrics of the epoch just trained.  A stop signal during them saves the
    epoch's training (the resumed run evaluates it) and exits."""
    after_training = rng_state()
    metrics: dict = {}
    for split, loader, batches in evaluations:
        poll = StopPoll(loop.stop, loop.settings.stop_every, batches, loop.device)
        found = evaluate(loop.net, loader, loop.device, loop.amp, loop.settings.channels_last, poll, split=split)
        if found is None:
            save_last(loop, epoch, EpochProgress(**{**vars(stats), "rng": gather_rng(after_training)}))
            log.warning(
                "caught signal %s during the evaluation of epoch %d: checkpointed its training; exiting "
                "so the job can be requeued and resumed",
                loop.stop.received,
                epoch + 1,
            )
            loop.stop.exit()
        metrics.update(found)
    return metrics


def _end_epoch(loop: Loop, epoch: int, lr: float, stats: EpochProgress, metrics: dict) -> None:
    """Step a per-epoch scheduler, keep the best, on rank 0 write the epoch's metrics and checkpoints, then
    call the per-epoch hooks."""
    if not loop.settings.per_step:
        loop.sched.step()
    record = loop.record
    improved = metrics[record.select] > record.best_top1
    record.best_top1 = max(record.best_top1, metrics[record.select])
    wall = record.wall_s()
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": stats.loss_sum / stats.seen,
        "train_top1": 100.0 * stats.correct / stats.seen,
        **metrics,
        "images_per_s": stats.seen / stats.seconds,
        "epoch_s": stats.seconds,
        "wall_s": wall,
    }
    record.history.append(row)
    state = checkpoint_of(loop, epoch + 1, None, wall)
    if loop.env.is_main:
        # metrics.jsonl is written from the record the checkpoint holds; a kill between the two leaves it one
        # epoch ahead, and the resume drops that line (the epoch is trained again).
        rundir.write_metrics(record.run_dir / "metrics.jsonl", record.history)
        loop.loggers.log_metrics(row, epoch + 1)
        rundir.save_checkpoint(record.ckpt_dir / rundir.LAST, state)
        if improved:
            rundir.save_best(record.ckpt_dir, state, row)
        _log_epoch(loop, row)
    for hook in loop.hooks:  # every rank, once the epoch is on record (nfbench/engine/hooks.py)
        hook.after_epoch(epoch + 1, row, loop)
    distributed.barrier()


def _log_epoch(loop: Loop, row: dict) -> None:
    val = f"val top-1 {row['val_top1']:.2f}  " if "val_top1" in row else ""
    log.info(
        "epoch %d/%d  lr %.4g  train loss %.4f top-1 %.2f  %stest loss %.4f top-1 %.2f top-5 %.2f  %.0f img/s",
        row["epoch"],
        loop.settings.epochs,
        row["lr"],
        row["train_loss"],
        row["train_top1"],
        val,
        row["test_loss"],
        row["test_top1"],
        row["test_top5"],
        row["images_per_s"],
    )


def _finished_result(loop: Loop, start_epoch: int, partial: Optional[EpochProgress]) -> Optional[dict]:
    """The result of a run that was already finished (a rerun or requeue of its command): result.json as it
    is when it agrees with the checkpointed record, else written again from that record; None while there
    are epochs to train.  Every rank takes rank 0's answer."""
    done = start_epoch >= loop.settings.epochs and partial is None
    stored = None
    if done and loop.env.is_main:
        stored = rundir.read_json(loop.record.run_dir / "result.json", strict=False)
        history = loop.record.history
        agrees = (
            isinstance(stored, dict)
            and stored.get("status") == "finished"
            and history
            and stored.get("epochs") == len(history)
            and stored.get("test_top1") == rundir.strict_json(history[-1]).get("test_top1")
        )
        if agrees:
            log.info(
                "run %s is finished already (%d epochs): nothing to train, result.json kept",
                loop.record.run_dir,
                len(history),
            )
            _keep_final_weights(loop)
        else:
            stored = None
    stored = distributed.broadcast_object(stored)
    if not done:
        return None
    if stored is not None:
        return stored
    return _finish(loop, "finished", None)


def _keep_final_weights(loop: Loop) -> None:
    """A finished run without best.pt whose best epoch is its last (best.pt deleted, or a branch whose best is
    selected afresh and that had no epoch left to train) leaves those weights as model.safetensors; any other
    final weights would not be the epoch result.json calls the best."""
    record = loop.record
    best = best_row(record.history, record.select, record.best_from)
    weights = record.ckpt_dir / rundir.WEIGHTS
    if best is None or (record.ckpt_dir / rundir.BEST).exists() or weights.exists():
        return
    if best["epoch"] == record.history[-1]["epoch"]:
        rundir.save_weights(weights, loop.model.state_dict(), {**best, "selected_on": record.select}, record.config)
    else:
        log.warning(
            "%s: best.pt of epoch %d (the best on %s) is missing; its weights cannot be written",
            record.ckpt_dir,
            best["epoch"],
            record.select,
        )


def _finish(loop: Loop, status: str, divergence: Optional[dict]) -> dict:
    """result.json (from the record, never from the files), the summary line and the loggers' last word."""
    cfg, record = loop.cfg, loop.record
    history = record.history
    if loop.env.is_main and status == "finished":
        _keep_final_weights(loop)
    result = {
        "status": status,
        "divergence": divergence,
        "epochs": len(history),
        "epochs_planned": cfg.trainer.epochs,
        "params": count_params(loop.model),
        "data": cfg.data.name,
        "model": cfg.model.name,
        "init": cfg.init.name,
        "weights": loop.scheme.weights,
        "seed": cfg.seed,
        "experiment": cfg.get("experiment"),
        "world_size": loop.env.world_size,
        "wall_s": record.wall_s(),
        "resumed_from": record.resumed_from,
        "data_fingerprint": record.data["fingerprint"],  # which pixels (nfbench.data.fingerprint)
        **best_figures(history, record.select, record.best_from),
    }
    last = history[-1] if history else None
    if last is not None:
        final = ("test_top1", "test_top5", "test_loss", "train_loss", "train_top1", "val_top1", "val_top5", "val_loss")
        result.update({k: last[k] for k in final if k in last})
    result = rundir.strict_json(result)  # what result.json holds: a NaN loss is null plus "loss_str": "nan"
    if loop.env.is_main:
        rundir.write_result(record.run_dir / "result.json", result)
        log.info("%s", summary_line(record.run_dir, result))
    loop.loggers.log_hparams(cfg, {k: v for k, v in result.items() if k in FINAL_METRICS})
    loop.loggers.close()
    return result
