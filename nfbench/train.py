"""The training loop: ``train(cfg) -> dict of final metrics``, used by every entry point.

Read top to bottom: setup (ranks, run directory), data, model and scheme, optimiser, resume,
loop (train one epoch, evaluate, log, checkpoint), result.  One process or many (DDP), the
same code runs; only rank 0 writes files, logs and progress bars.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from nfbench import distributed, rundir
from nfbench.config import Config
from nfbench.data import build_source
from nfbench.distributed import DistEnv
from nfbench.epoch_metrics import EpochMetrics
from nfbench.graphed_step import GraphedStep, check_device
from nfbench.loaders import build_loaders, eval_loader
from nfbench.loggers import Loggers
from nfbench.models import build_model
from nfbench.optim import build_optimizer, build_scheduler, clip_gradients
from nfbench.preemption import StopSignal
from nfbench.progress import Progress, summary_line
from nfbench.rng import rng_state, set_rng_state
from nfbench.runtime import pick_device, resolve_run_dir, seed_all, set_deterministic
from nfbench.schemes import build_scheme
from nfbench.validation import validate

log = logging.getLogger("nfbench")

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The result.json numbers a logger's hyperparameter table shows beside each run's config.
FINAL_METRICS = ("test_top1", "test_top5", "test_loss", "val_top1", "val_loss", "train_top1", "train_loss",
                 "best_val_top1", "test_top1_at_best_val", "best_test_top1", "best_epoch", "epochs", "wall_s")


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k logits, for each k (device tensors)."""
    kmax = min(max(ks), logits.shape[1])
    hit = logits.topk(kmax, dim=1).indices.eq(target[:, None])
    return [hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(net: nn.Module, loader: DataLoader, device: torch.device, amp: dict, channels_last: bool,
             stop: Optional[Callable[[int], bool]] = None, split: str = "test") -> Optional[dict]:
    """Loss (plain cross-entropy), top-1 and top-5 in percent on ``split`` (test or val), summed exactly
    over all ranks; None when ``stop(batch index)`` asks to leave (a stop signal: an evaluation can
    outlast SLURM's grace)."""
    net.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top-1 hits, top-5 hits, images
    for i, (x, y) in enumerate(loader):
        if stop is not None and stop(i):
            return None
        x, y = _to_device(x, y, device, channels_last)
        with torch.autocast(**amp):
            logits = net(x)
        c1, c5 = topk_correct(logits, y, (1, 5))
        sums[:3] += torch.stack([nn.functional.cross_entropy(logits.float(), y, reduction="sum").double(),
                                 c1.double(), c5.double()])
        sums[3] += len(y)  # a Python number: no blocking host-to-device copy per batch
    distributed.all_reduce_sum(sums)
    loss, c1, c5, n = sums.tolist()
    return {f"{split}_loss": loss / n, f"{split}_top1": 100.0 * c1 / n, f"{split}_top5": 100.0 * c5 / n}


class Diverged(Exception):
    """A non-finite loss, or non-finite weights before a checkpoint; ``info`` goes to result.json."""

    def __init__(self, info: dict) -> None:
        super().__init__(info)
        self.info = info


def weights_finite(net: nn.Module) -> bool:
    """Whether every floating parameter and buffer is finite: one device read, run before each save."""
    flags = [torch.isfinite(t).all() for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


@dataclass
class EpochProgress:
    """Running sums of one epoch: where a mid-epoch checkpoint stopped and what it had seen."""

    batches_done: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    rng: list = field(default_factory=list)  # per-rank RNG states at batches_done


@dataclass
class Loop:
    """What one epoch of training needs, built once by :func:`train`."""

    cfg: DictConfig
    net: nn.Module  # forward callable (DDP-wrapped and/or compiled)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    mixup: Optional[Callable]
    criterion: nn.Module
    device: torch.device
    amp: dict
    env: DistEnv
    stop: StopSignal
    save: Callable[[int, EpochProgress], None]  # (epoch being trained, progress) -> mid-epoch checkpoint
    loggers: Loggers
    progress: Progress
    graphed: Optional[GraphedStep] = None  # trainer.cuda_graph: the step captured and replayed


def train_one_epoch(loop: Loop, loader: DataLoader, epoch: int, resume: Optional[EpochProgress]) -> EpochProgress:
    """One pass over the training set.  Loss and accuracy accumulate on the device and are read once
    per ``trainer.log_every`` steps, where a non-finite loss and a stop signal are also checked."""
    cfg, tcfg, device = loop.cfg, loop.cfg.trainer, loop.device
    # Read the config once: a DictConfig lookup per step costs as much host time as a kernel launch.
    channels_last, log_every, every = tcfg.channels_last, tcfg.log_every, tcfg.checkpoint_every_steps
    clip, per_step = cfg.optim.clip_grad_norm > 0 or cfg.optim.agc > 0, cfg.sched.per_step
    p = resume or EpochProgress()
    loop.net.train()
    steps = len(loader)
    if p.batches_done == steps:  # stopped during the evaluation: the training of this epoch is done
        set_rng_state(p.rng[loop.env.rank])
        return EpochProgress(steps, p.loss_sum, p.correct, p.seen, p.seconds)
    # Loss, top-1 hits and images on the device, four kernels per step (nfbench/epoch_metrics.py).
    # A mid-epoch checkpoint holds the sums over all ranks: rank 0 carries them on, so the
    # all-reduce at the epoch's end counts them once.
    carried = (p.loss_sum, p.correct, p.seen) if loop.env.is_main else (0.0, 0, 0)
    metrics = EpochMetrics(steps, device, *carried, start=p.batches_done)
    global_step0 = epoch * steps
    t0 = time.perf_counter() - p.seconds
    for i, (x, y) in enumerate(loop.progress.wrap(loader, epoch)):
        if i < p.batches_done:
            if i == p.batches_done - 1:  # the loader has drawn what it drew before; now the rest of the RNG
                set_rng_state(p.rng[loop.env.rank])
            continue
        if loop.graphed is not None:  # the same step, one replay (nfbench/graphed_step.py)
            loss, hits = loop.graphed(x, y)
            metrics.record(i, loss, hits, len(y))
        else:
            x, y = _to_device(x, y, device, channels_last)
            x, target = loop.mixup(x, y) if loop.mixup is not None else (x, y)
            with torch.autocast(**loop.amp):
                logits = loop.net(x)
                loss = loop.criterion(logits.float(), target)
            loop.opt.zero_grad(set_to_none=True)
            loop.scaler.scale(loss).backward()
            if clip:
                loop.scaler.unscale_(loop.opt)
                clip_gradients(loop.net, cfg.optim)
            loop.scaler.step(loop.opt)
            loop.scaler.update()
            metrics.add(i, loss, logits, y)
        if per_step:
            loop.sched.step()
        step = global_step0 + i
        done = i + 1
        if done % log_every == 0 or done == steps:
            _check_finite(loop, metrics, epoch, global_step0, done, weights=False)
            if loop.progress.due():
                loss_sum, _, seen = metrics.sums.tolist()
                elapsed = time.perf_counter() - t0
                loop.progress.show(epoch, done, steps, loss_sum / seen, loop.opt.param_groups[0]["lr"],
                                   seen * loop.env.world_size / elapsed, (steps - done) * elapsed / done)
            if loop.loggers:
                loop.loggers.log_scalars({"train/loss_step": loss.detach().item()}, step)
        if done == steps:
            break
        # Ranks agree on stopping at a log step (one small all-reduce); a single process checks every step.
        check = not loop.env.enabled or done % log_every == 0
        stopping = check and distributed.any_rank(loop.stop.received is not None, device)
        if stopping or (every and done % every == 0):
            _check_finite(loop, metrics, epoch, global_step0, done, weights=True)  # never save a diverged state
            loop.save(epoch, _snapshot(metrics.sums, done, time.perf_counter() - t0, device))
        if stopping:
            log.warning("caught signal %s: checkpointed epoch %d at step %d/%d; exiting so the job can be "
                        "requeued and resumed", loop.stop.received, epoch + 1, done, steps)
            loop.stop.exit()
    loop.progress.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    _check_finite(loop, metrics, epoch, global_step0, steps, weights=True)  # the epoch's end is saved
    distributed.all_reduce_sum(metrics.sums)
    loss_sum, correct, seen = metrics.sums.tolist()
    return EpochProgress(steps, loss_sum, int(correct), int(seen), time.perf_counter() - t0)


def _check_finite(loop: Loop, metrics: EpochMetrics, epoch: int, global_step0: int, done: int, weights: bool) -> None:
    """Raise :class:`Diverged` on every rank if any rank saw a non-finite loss in steps [0, ``done``)
    or, with ``weights``, holds a non-finite weight (a step's update can overflow after a finite loss)."""
    bad = metrics.fold(done)
    broken = bad is None and weights and not weights_finite(loop.net)
    if distributed.any_rank(bad is not None or broken, loop.device):
        raise Diverged({"epoch": epoch + 1, "step": global_step0 + (bad[0] if bad else done - 1),
                        "loss": bad[1] if bad else None, "weights_finite": not broken,
                        "lr": loop.opt.param_groups[0]["lr"]})


def _gather_rng(state: dict) -> list:
    """Every rank's RNG ``state``, gathered to all ranks."""
    if not distributed.dist.is_initialized():
        return [state]
    states: list = [None] * distributed.dist.get_world_size()
    distributed.dist.all_gather_object(states, state)
    return states


def _snapshot(sums: torch.Tensor, done: int, seconds: float, device: torch.device) -> EpochProgress:
    """Epoch progress summed over ranks, with every rank's RNG state (gathered to all ranks)."""
    total = sums.clone()
    distributed.all_reduce_sum(total)
    loss_sum, correct, seen = total.tolist()
    return EpochProgress(done, loss_sum, int(correct), int(seen), seconds, _gather_rng(rng_state()))


def _stop_check(loop: Loop, batches: int) -> Callable[[int], bool]:
    """Whether a stop signal asks to leave before batch ``i`` of an evaluation: every batch in one
    process; with several, at log steps of the first ``batches`` (which every rank has), all ranks agreeing."""
    if not loop.env.enabled:
        return lambda i: loop.stop.received is not None
    every = loop.cfg.trainer.log_every
    return lambda i: i < batches and i % every == 0 and distributed.any_rank(loop.stop.received is not None,
                                                                             loop.device)


def best_figures(history: list[dict], select: str) -> dict:
    """result.json's best figures, selected on ``select`` (val_top1 or test_top1) as best.pt is: the
    first epoch of the highest value.  On validation: its best top-1, that epoch and the test top-1 there
    (the number to report); on the test set: ``best_test_top1``, an optimistic figure, not a result."""
    best = max(history, key=lambda row: row[select]) if history else {}  # max keeps the first of equal values
    figures = {"best_selected_on": select, "best_epoch": best.get("epoch")}
    if select == "val_top1":
        return {**figures, "best_val_top1": best.get("val_top1"), "test_top1_at_best_val": best.get("test_top1")}
    return {**figures, "best_test_top1": best.get("test_top1")}


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def train(cfg: DictConfig) -> dict:
    """Train and evaluate the configured model; return the final metrics (also written to result.json).

    With ``trainer.devices=N > 1`` (and no launcher around), starts N processes on this machine
    and returns rank 0's result.
    """
    validate(cfg)
    env = distributed.detect()
    if cfg.trainer.cuda_graph:  # before any file or process: the device as it resolves here
        check_device(pick_device(cfg.trainer.device), env.world_size if env.enabled else cfg.trainer.devices)
    # One run per run directory: rank 0 (or the launcher of trainer.devices=N) holds it until it ends.
    with rundir.RunDirLock(resolve_run_dir(cfg)) if env.is_main else contextlib.nullcontext():
        if cfg.trainer.devices > 1 and not env.enabled:
            return _spawn(cfg)
        device = distributed.setup(env, pick_device(cfg.trainer.device).type)
        try:
            return _train(cfg, env, device)
        finally:
            distributed.teardown()


def _resume_state(cfg: DictConfig, run_dir: Path, world_size: int) -> Optional[tuple[Path, dict]]:
    """The checkpoint to continue and its state, refused (ConfigError) if ``cfg`` would change its trajectory."""
    found = rundir.load_resume_state(run_dir, cfg.trainer.resume)
    if found is not None:
        rundir.check_resume(found[1], OmegaConf.to_container(cfg, resolve=True), found[0], world_size)
    return found


def _spawn(cfg: DictConfig) -> dict:
    run_dir = resolve_run_dir(cfg)
    container = OmegaConf.to_container(cfg, resolve=True)
    container["trainer"]["run_dir"] = str(run_dir)  # the workers live outside Hydra: give them the directory
    _resume_state(cfg, run_dir, cfg.trainer.devices)  # a refusal in one line here, not in a worker's traceback
    distributed.spawn(cfg.trainer.devices, _spawned_worker, container)
    return rundir.read_json(run_dir / "result.json")


def _spawned_worker(container: dict) -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(Config), container)
    if distributed.detect().is_main:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
        rundir.log_to_file(Path(cfg.trainer.run_dir))
    train(cfg)  # type: ignore[arg-type]


def _train(cfg: DictConfig, env: DistEnv, device: torch.device) -> dict:
    tcfg = cfg.trainer
    main = env.is_main
    run_dir = Path(distributed.broadcast_object(str(resolve_run_dir(cfg))))
    ckpt_dir = run_dir / rundir.CHECKPOINTS
    resumed = _resume_state(cfg, run_dir, env.world_size)  # before any file is written: a refusal changes none
    set_deterministic(tcfg.deterministic)
    if not main:
        log.setLevel(logging.WARNING)

    # Data: data.batch_size is the global batch, split over the ranks.
    src = build_source(cfg.data)
    train_loader, test_loader = build_loaders(cfg.data, src, cfg.seed, env.rank, env.world_size,
                                              pin_memory=device.type == "cuda", device=device)
    val_loader = None if src.val is None else eval_loader(cfg.data, src, src.val, env.rank, env.world_size,
                                                          pin_memory=device.type == "cuda", device=device)
    # best.pt and the best figures: chosen on the validation split when there is one; else on the
    # test set, an optimistic figure, named for what it is (best_test_top1).
    select = "val_top1" if val_loader is not None else "test_top1"
    if main:  # the data is there: the run's first files (a refusal before leaves nothing of nfbench's)
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_json(run_dir / "env.json", rundir.environment(device, world_size=env.world_size))
        rundir.atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())

    # Model and scheme: the same seed on every rank, before DDP and the optimiser see the parameters.
    seed_all(cfg.seed)
    scheme = build_scheme(cfg.init)
    net = build_model(cfg.model, scheme, src.num_classes, src.in_chans, src.image_size).to(device)
    if tcfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    n_params = count_params(net)

    opt = build_optimizer(net, cfg.optim, device)
    sched = build_scheduler(opt, cfg.sched, tcfg.epochs, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=tcfg.precision == "fp16")
    amp = dict(device_type=device.type, dtype=AMP_DTYPES.get(tcfg.precision, torch.float32),
               enabled=tcfg.precision != "fp32")
    mixup = None
    if tcfg.mixup_alpha > 0 or tcfg.cutmix_alpha > 0:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        mixup = Mixup(mixup_alpha=tcfg.mixup_alpha, cutmix_alpha=tcfg.cutmix_alpha,
                      label_smoothing=tcfg.label_smoothing, num_classes=src.num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)

    # Resume: this run directory's own last.pt, else an explicit trainer.resume.
    start_epoch, best_top1, wall_before = 0, -math.inf, 0.0
    partial: Optional[EpochProgress] = None
    branched_from: Optional[dict] = None
    if resumed is not None:
        resume_from, state = resumed
        branched_from = rundir.branched_from(resume_from, state, run_dir)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, wall_before = state["epoch"], state["wall_s"]
        # Checkpoints written before data.val_size hold the (test-selected) best under another name.
        best_top1 = state["best_top1"] if "best_top1" in state else state["best_test_top1"]
        if state.get("partial"):
            partial = EpochProgress(**state["partial"])
        log.info("resumed from %s: epoch %d, step %d", resume_from, start_epoch + 1,
                 partial.batches_done if partial else 0)

    if main:  # drop the lines of epochs no checkpoint holds, and a line torn by a crash
        rundir.truncate_metrics(run_dir / "metrics.jsonl", start_epoch)

    fwd: nn.Module = net
    if env.enabled:
        fwd = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if tcfg.compile:
        fwd = torch.compile(fwd, mode=tcfg.compile_mode)

    loggers = Loggers.from_config(cfg, run_dir, start_epoch) if main else Loggers()
    log.info("%s / %s (%s weights) on %s: %.2fM parameters, %d train / %d validation / %d test images, "
             "%d process(es) on %s", cfg.model.name, cfg.init.name, scheme.weights, cfg.data.name, n_params / 1e6,
             len(src.train), len(src.val) if src.val is not None else 0, len(src.test), env.world_size, device)

    t_start = time.perf_counter()

    def checkpoint_state(epoch: int, progress: Optional[EpochProgress]) -> dict:
        """``epoch``: the epochs completed (the number of the last one, counting from 1);
        ``partial``: how far into the next one."""
        return {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "best_on": select, "best_top1": best_top1,
                "wall_s": wall_before + time.perf_counter() - t_start, "rng": rng_state(),
                "partial": progress.__dict__ if progress else None,
                "config": OmegaConf.to_container(cfg, resolve=True), "resumed_from": branched_from}

    def save_mid_epoch(epoch: int, progress: EpochProgress) -> None:
        if main:
            rundir.save_checkpoint(ckpt_dir / rundir.LAST, checkpoint_state(epoch, progress))
        distributed.barrier()

    stop = StopSignal()
    loop = Loop(cfg, fwd, opt, sched, scaler, mixup, criterion, device, amp, env, stop, save_mid_epoch, loggers,
                Progress(tcfg.progress and main, tcfg.epochs, tcfg.progress_every_s),
                GraphedStep(net, opt, criterion, amp, cfg.optim, tcfg.channels_last) if tcfg.cuda_graph else None)
    status, divergence = "finished", None
    # Validation, then test: (split, loader, the batches every rank has, where a stop signal is checked).
    evaluations = [(split, loader, distributed.min_over_ranks(len(loader), device))
                   for split, loader in (("val", val_loader), ("test", test_loader)) if loader is not None]
    with stop:
        for epoch in range(start_epoch, tcfg.epochs):
            # Everything random in an epoch is a function of (seed, epoch, rank): resuming is exact.
            seed_all(cfg.seed, epoch, env.rank)
            train_loader.sampler.set_epoch(epoch)
            if main and tcfg.log_spp_every and epoch % tcfg.log_spp_every == 0:
                from nfbench.spp import log_spp  # leaves weights, buffers and RNG as they were

                log_spp(loggers, net, cfg, test_loader, src.num_classes, epoch * len(train_loader))
            lr = opt.param_groups[0]["lr"]
            try:
                stats = train_one_epoch(loop, train_loader, epoch, partial)
            except Diverged as d:
                status, divergence = "diverged", d.info
                log.error("training diverged: %s at epoch %d, step %d (lr %.4g); nothing was saved after it: %s",
                          f"non-finite loss {d.info['loss']}" if d.info["loss"] is not None else "non-finite weights",
                          d.info["epoch"], d.info["step"], d.info["lr"], rundir.kept_checkpoint(ckpt_dir))
                break
            after_training = rng_state()
            metrics: Optional[dict] = {}
            for split, loader, batches in evaluations:
                found = evaluate(fwd, loader, device, amp, tcfg.channels_last, _stop_check(loop, batches), split=split)
                if found is None:
                    metrics = None
                    break
                metrics.update(found)  # type: ignore[union-attr]
            if metrics is None:  # a stop signal: save the trained epoch; the resumed run evaluates it
                save_mid_epoch(epoch, EpochProgress(**{**stats.__dict__, "rng": _gather_rng(after_training)}))
                log.warning("caught signal %s during the evaluation of epoch %d: checkpointed its training; exiting "
                            "so the job can be requeued and resumed", stop.received, epoch + 1)
                stop.exit()
            partial = None
            if not cfg.sched.per_step:
                sched.step()
            improved = metrics[select] > best_top1
            best_top1 = max(best_top1, metrics[select])
            state = checkpoint_state(epoch + 1, None)
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": stats.loss_sum / stats.seen,
                   "train_top1": 100.0 * stats.correct / stats.seen, **metrics,
                   "images_per_s": stats.seen / stats.seconds, "epoch_s": stats.seconds, "wall_s": state["wall_s"]}
            if main:
                rundir.append_metrics(run_dir / "metrics.jsonl", row)
                loggers.log_metrics(row, epoch + 1)
                rundir.save_checkpoint(ckpt_dir / rundir.LAST, state)
                if improved:
                    rundir.save_best(ckpt_dir, state, row)
                val = f"val top-1 {metrics['val_top1']:.2f}  " if val_loader is not None else ""
                log.info("epoch %d/%d  lr %.4g  train loss %.4f top-1 %.2f  %stest loss %.4f top-1 %.2f top-5 %.2f  "
                         "%.0f img/s", epoch + 1, tcfg.epochs, lr, row["train_loss"], row["train_top1"], val,
                         metrics["test_loss"], metrics["test_top1"], metrics["test_top5"], row["images_per_s"])
            distributed.barrier()
    history = rundir.read_metrics(run_dir / "metrics.jsonl")
    if main and status == "finished" and history and not (ckpt_dir / rundir.BEST).exists():  # a branch never improving
        rundir.save_weights(ckpt_dir / rundir.WEIGHTS, net.state_dict(), history[-1],
                            OmegaConf.to_container(cfg, resolve=True))
    result = {
        "status": status,
        "divergence": divergence,
        "epochs": len(history),
        "epochs_planned": tcfg.epochs,
        "params": n_params,
        "data": cfg.data.name, "model": cfg.model.name, "init": cfg.init.name, "weights": scheme.weights,
        "seed": cfg.seed, "experiment": cfg.get("experiment"), "world_size": env.world_size,
        "wall_s": wall_before + time.perf_counter() - t_start,
        "resumed_from": branched_from,
        **best_figures(history, select),
    }
    last = history[-1] if history else None
    if last is not None:
        final = ("test_top1", "test_top5", "test_loss", "train_loss", "train_top1", "val_top1", "val_top5", "val_loss")
        result.update({k: last[k] for k in final if k in last})
    result = rundir.strict_json(result)  # what result.json holds: a NaN loss is null plus "loss_str": "nan"
    if main:
        rundir.write_json(run_dir / "result.json", result)
        log.info("%s", summary_line(run_dir, result))
    loggers.log_hparams(cfg, {k: v for k, v in result.items() if k in FINAL_METRICS})
    loggers.close()
    return result
