"""The training loop: ``train(cfg) -> dict of final metrics``, used by every entry point.

Read top to bottom: setup, data, model and scheme, optimiser, resume, loop
(train one epoch, evaluate, log, checkpoint), result.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from nfbench import rundir
from nfbench.config import validate
from nfbench.data import build_loaders, build_source
from nfbench.models import build_model
from nfbench.optim import build_optimizer, build_scheduler, clip_gradients
from nfbench.schemes import build_scheme

log = logging.getLogger("nfbench")

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device={name} but CUDA is not available here; use trainer.device=cpu or auto")
    return torch.device(name)


def seed_all(*key: int) -> None:
    """Seed Python, NumPy and torch from a tuple (seed, epoch, rank): no collisions across the tuple."""
    s = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def set_deterministic(on: bool) -> None:
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    torch.use_deterministic_algorithms(on, warn_only=True)


def resolve_run_dir(cfg: DictConfig) -> Path:
    """Hydra's output directory when running under Hydra, else ``trainer.run_dir``."""
    if cfg.trainer.run_dir:
        return Path(cfg.trainer.run_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    raise ValueError("no run directory: set trainer.run_dir=PATH when calling train() outside Hydra")


@dataclass
class EpochStats:
    loss: float
    top1: float
    images: int
    seconds: float


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k logits, for each k (device tensors)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(target[:, None])
    return [hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


@torch.no_grad()
def evaluate(net: nn.Module, loader: DataLoader, device: torch.device, amp: dict, channels_last: bool) -> dict:
    """Test loss (plain cross-entropy), top-1 and top-5 in percent."""
    net.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    c1 = torch.zeros((), device=device, dtype=torch.int64)
    c5 = torch.zeros_like(c1)
    n = 0
    for x, y in loader:
        x, y = _to_device(x, y, device, channels_last)
        with torch.autocast(**amp):
            logits = net(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        a, b = topk_correct(logits, y, (1, 5))
        c1 += a
        c5 += b
        n += len(y)
    return {"test_loss": loss_sum.item() / n, "test_top1": 100.0 * c1.item() / n, "test_top5": 100.0 * c5.item() / n}


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


class Diverged(Exception):
    def __init__(self, info: dict) -> None:
        super().__init__(info)
        self.info = info


def train_one_epoch(net, loader, opt, sched, scaler, mixup, criterion, cfg, device, amp, epoch, global_step,
                    writer, progress) -> EpochStats:
    """One pass over the training set.  Loss and accuracy accumulate on the device and are
    read once per ``trainer.log_every`` steps, where a non-finite loss is also detected."""
    tcfg = cfg.trainer
    net.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    first_bad = torch.full((), -1, device=device, dtype=torch.int64)
    bad_loss = torch.zeros((), device=device)
    seen = 0
    t0 = time.perf_counter()
    bar = progress(loader, epoch)
    for i, (x, y) in enumerate(bar):
        x, y = _to_device(x, y, device, tcfg.channels_last)
        x, target = mixup(x, y) if mixup is not None else (x, y)
        with torch.autocast(**amp):
            logits = net(x)
            loss = criterion(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.clip_grad_norm > 0 or cfg.optim.agc > 0:
            scaler.unscale_(opt)
            clip_gradients(net, cfg.optim)
        scaler.step(opt)
        scaler.update()
        if cfg.sched.per_step:
            sched.step()
        step = global_step + i
        detached = loss.detach()
        new_bad = (first_bad < 0) & ~torch.isfinite(detached)
        first_bad = torch.where(new_bad, step, first_bad)
        bad_loss = torch.where(new_bad, detached, bad_loss)
        loss_sum += detached * len(y)
        correct += logits.detach().argmax(1).eq(y).sum()
        seen += len(y)
        last = i == len(loader) - 1
        if (i + 1) % tcfg.log_every == 0 or last:
            if first_bad.item() >= 0:
                raise Diverged({"epoch": epoch, "step": int(first_bad.item()), "loss": float(bad_loss.item()),
                                "lr": opt.param_groups[0]["lr"]})
            ips = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", lr=f"{opt.param_groups[0]['lr']:.3g}",
                            img_s=f"{ips:.0f}", refresh=False)
            if writer is not None:
                writer.add_scalar("train/loss_step", detached.item(), step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return EpochStats(loss_sum.item() / max(seen, 1), 100.0 * correct.item() / max(seen, 1), seen, seconds)


def _progress_factory(enabled: bool, epochs: int):
    from tqdm.auto import tqdm

    def wrap(loader, epoch):
        return tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not enabled,
                    dynamic_ncols=True, unit="batch")

    return wrap


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def train(cfg: DictConfig) -> dict:
    """Train and evaluate the configured model; return the final metrics (also written to result.json)."""
    validate(cfg)
    tcfg = cfg.trainer
    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / rundir.CHECKPOINTS
    device = pick_device(tcfg.device)
    set_deterministic(tcfg.deterministic)
    rundir.write_json(run_dir / "env.json", rundir.environment(device, world_size=1))
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    # Data
    src = build_source(cfg.data)
    train_loader, test_loader = build_loaders(cfg.data, src, cfg.seed, pin_memory=device.type == "cuda")

    # Model and scheme: same seed on every rank, before the optimiser sees the parameters.
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

    # Resume: an explicit trainer.resume, or this run directory's own last.pt.
    start_epoch, best_top1, wall_before = 0, -math.inf, 0.0
    resume_from: Optional[Path] = None
    if tcfg.resume:
        resume_from = rundir.find_checkpoint(tcfg.resume)
    elif (ckpt_dir / rundir.LAST).exists():
        resume_from = ckpt_dir / rundir.LAST
    if resume_from is not None:
        state = rundir.load_checkpoint(resume_from)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_top1, wall_before = state["epoch"] + 1, state["best_test_top1"], state["wall_s"]
        rundir.truncate_metrics(run_dir / "metrics.jsonl", state["epoch"])
        log.info("resumed from %s after epoch %d", resume_from, start_epoch)

    step_fn = net
    if tcfg.compile:
        step_fn = torch.compile(net)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"))
    progress = _progress_factory(tcfg.progress, tcfg.epochs)
    log.info("%s / %s (%s weights) on %s: %.2fM parameters, %d train / %d test images, device %s",
             cfg.model.name, cfg.init.name, scheme.weights, cfg.data.name, n_params / 1e6,
             len(train_loader.sampler), len(test_loader.dataset), device)

    def checkpoint_state(epoch: int, wall: float) -> dict:
        return {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "best_test_top1": best_top1, "wall_s": wall,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "config": OmegaConf.to_container(cfg, resolve=True)}

    t_start = time.perf_counter()
    status, divergence = "finished", None
    row = (rundir.read_metrics(run_dir / "metrics.jsonl") or [None])[-1]
    for epoch in range(start_epoch, tcfg.epochs):
        # Everything random in an epoch is a function of (seed, epoch): resuming is exact.
        seed_all(cfg.seed, epoch, 0)
        train_loader.sampler.set_epoch(epoch)
        lr = opt.param_groups[0]["lr"]
        try:
            stats = train_one_epoch(step_fn, train_loader, opt, sched, scaler, mixup, criterion, cfg, device, amp,
                                    epoch, epoch * len(train_loader), writer, progress)
        except Diverged as d:
            status, divergence = "diverged", d.info
            log.error("training diverged: non-finite loss %s at epoch %d, step %d (lr %.4g); keeping the last good "
                      "checkpoint %s", d.info["loss"], d.info["epoch"] + 1, d.info["step"], d.info["lr"],
                      ckpt_dir / rundir.LAST)
            break
        if not cfg.sched.per_step:
            sched.step()
        metrics = evaluate(step_fn, test_loader, device, amp, tcfg.channels_last)
        wall = wall_before + time.perf_counter() - t_start
        row = {"epoch": epoch, "lr": lr, "train_loss": stats.loss, "train_top1": stats.top1, **metrics,
               "images_per_s": stats.images / stats.seconds, "epoch_s": stats.seconds, "wall_s": wall}
        rundir.append_metrics(run_dir / "metrics.jsonl", row)
        for k, v in row.items():
            if k != "epoch":
                writer.add_scalar(k.replace("_", "/", 1) if k.startswith(("train_", "test_")) else k, v, epoch + 1)
        improved = metrics["test_top1"] > best_top1
        best_top1 = max(best_top1, metrics["test_top1"])
        state = checkpoint_state(epoch, wall)
        rundir.save_checkpoint(ckpt_dir / rundir.LAST, state)
        if improved:
            rundir.save_checkpoint(ckpt_dir / rundir.BEST, state)
        log.info("epoch %d/%d  lr %.4g  train loss %.4f top-1 %.2f  test loss %.4f top-1 %.2f top-5 %.2f  %.0f img/s",
                 epoch + 1, tcfg.epochs, lr, stats.loss, stats.top1, metrics["test_loss"], metrics["test_top1"],
                 metrics["test_top5"], row["images_per_s"])
    writer.close()

    history = rundir.read_metrics(run_dir / "metrics.jsonl")
    result = {
        "status": status,
        "divergence": divergence,
        "epochs": len(history),
        "epochs_planned": tcfg.epochs,
        "params": n_params,
        "data": cfg.data.name, "model": cfg.model.name, "init": cfg.init.name, "weights": scheme.weights,
        "seed": cfg.seed, "experiment": cfg.get("experiment"),
        "best_test_top1": max((m["test_top1"] for m in history), default=None),
        "wall_s": wall_before + time.perf_counter() - t_start,
    }
    if row is not None:
        result.update({k: row[k] for k in ("test_top1", "test_top5", "test_loss", "train_loss", "train_top1")})
    rundir.write_json(run_dir / "result.json", result)
    return result
