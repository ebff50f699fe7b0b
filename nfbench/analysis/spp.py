"""Signal propagation at initialisation, measured at every residual block's output (docs/science.md#spp).

Civitelli et al. (Fig. 2 and 6) plot, per residual block, the variance of the
forward activations x_l and of the backward gradients dL/dx_l; Brock et al.
(2021a) add the average squared channel mean and the average channel variance.
:func:`block_stats` measures one network on one batch through forward hooks on
the blocks the model exposes (``net.blocks``), so it works for every scheme;
:func:`measure` builds the configured model and scheme as ``nfbench train``
would and averages over ``spp.seeds`` repeats; :func:`run_spp` writes
``spp.csv`` and the figure into the run directory.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, cast

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from nfbench import rundir
from nfbench.analysis.spp_plot import CSV_NAME, plot_model
from nfbench.data.sets import DataSource
from nfbench.data.source import build_source
from nfbench.engine.runtime import pick_device, resolve_run_dir, seed_all
from nfbench.engine.validation import validate
from nfbench.errors import ConfigError
from nfbench.loggers import Loggers
from nfbench.models import ModelPlan
from nfbench.models.resnet import ResNet

log = logging.getLogger("nfbench")

STATS = ("fwd_var", "bwd_var", "fwd_chan_mean_sq", "fwd_chan_var")
# The output contract of spp.csv (tests and `nfbench spp-plot` read it), then the columns the plot's bands need.
COLUMNS = ("model", "init", "weights", "block", *STATS)
EXTRA_COLUMNS = ("stride", "seeds", "fwd_var_min", "fwd_var_max", "bwd_var_min", "bwd_var_max")


@dataclass
class BlockStats:
    """The statistics of one residual block's output x_l (``block`` is the 0-based depth index)."""

    block: int
    stride: int
    fwd_var: float
    bwd_var: float
    fwd_chan_mean_sq: float
    fwd_chan_var: float


def _moments(t: torch.Tensor) -> tuple[float, float, float]:
    """Variance over all elements, then Brock et al.'s average squared channel mean and average
    channel variance (channel = dim 1; moments over batch and positions; population variances)."""
    t = t.detach().double()
    dims = [0, *range(2, t.ndim)]
    chan_var, chan_mean = torch.var_mean(t, dim=dims, correction=0)
    return t.var(correction=0).item(), chan_mean.pow(2).mean().item(), chan_var.mean().item()


def block_stats(net: ResNet, x: torch.Tensor, labels: torch.Tensor) -> list[BlockStats]:
    """One forward and backward pass of mean cross-entropy on (x, labels); statistics per block of ``net.blocks``.

    The gradients are taken with ``torch.autograd.grad`` with respect to the block outputs only, so
    no parameter's ``.grad`` changes and a training loop can call this between optimiser steps.
    The network runs in its current mode (BatchNorm in train mode uses the batch's statistics).
    """
    blocks = list(net.blocks)
    outputs: list[torch.Tensor] = []
    forward: list[tuple[float, float, float]] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        outputs.append(output)
        forward.append(_moments(output))

    handles = [b.register_forward_hook(record) for b in blocks]
    try:
        logits = net(x)
    finally:
        for h in handles:
            h.remove()
    if len(outputs) != len(blocks):
        raise RuntimeError(f"expected one output per residual block ({len(blocks)}), got {len(outputs)}")
    loss = nn.functional.cross_entropy(logits.float(), labels)
    grads = torch.autograd.grad(loss, outputs)
    stats = []
    for i, (block, (var, chan_mean_sq, chan_var), g) in enumerate(zip(blocks, forward, grads)):
        stats.append(BlockStats(i, block.stride, var, _moments(g)[0], chan_mean_sq, chan_var))
    return stats


def _test_batch(src: DataSource, n: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` test images drawn by the global generator (seeded by the caller), normalised, not augmented."""
    n_test = len(src.test)  # type: ignore[arg-type]
    if n > n_test:
        raise ConfigError(f"spp.batch_size={n} is larger than the {n_test} test images of {what}")
    idx = torch.randperm(n_test)[:n]
    xs, ys = zip(*(src.test[int(i)] for i in idx))
    return torch.stack(xs), torch.tensor(ys)


def measure(cfg: DictConfig, plan: Optional[ModelPlan] = None) -> list[dict]:
    """Per block, the statistics of the configured model and scheme at initialisation, averaged over seeds.

    Repeat k re-seeds with ``seed + k`` and then builds the network exactly as ``nfbench train`` does,
    so repeat 0 measures the very network a training run with the same seed starts from.
    ``plan`` is :func:`nfbench.engine.validation.validate`'s for ``cfg`` when the caller validated already.
    Returns the rows of spp.csv (:data:`COLUMNS` then :data:`EXTRA_COLUMNS`).
    """
    plan = plan or validate(cfg)
    s = cfg.spp
    device = pick_device(cfg.trainer.device)
    src = build_source(cfg.data) if s.input == "data" else None
    if src is not None:
        num_classes, in_chans, size = src.num_classes, src.in_chans, src.image_size
    else:
        num_classes, in_chans, size = s.num_classes, s.in_chans, s.image_size
    runs: list[list[BlockStats]] = []
    for k in range(s.seeds):
        seed_all(cfg.seed + k)
        net = plan.build(num_classes, in_chans, size).to(device).train()
        if src is not None:
            x, y = _test_batch(src, s.batch_size, f"data={cfg.data.name}")
        else:
            x, y = torch.randn(s.batch_size, in_chans, size, size), None
        if s.labels == "random":  # validate(): the only choice for Gaussian inputs
            y = torch.randint(num_classes, (s.batch_size,))
        assert y is not None  # a data batch's labels, or random ones (validate() allows no other pair)
        runs.append(block_stats(net, x.to(device), y.to(device)))
    return summarise(runs, cfg.model.name, cfg.init.name, plan.scheme.weights)


def summarise(runs: list[list[BlockStats]], model: str, init: str, weights: str) -> list[dict]:
    """One row per block: the mean of each statistic over the runs, and the min-max range of the two variances."""
    rows = []
    for per_block in zip(*runs):
        row: dict = {"model": model, "init": init, "weights": weights, "block": per_block[0].block}
        for name in STATS:
            row[name] = sum(getattr(b, name) for b in per_block) / len(per_block)
        row.update(stride=per_block[0].stride, seeds=len(per_block))
        for name in ("fwd_var", "bwd_var"):
            row[f"{name}_min"] = min(getattr(b, name) for b in per_block)
            row[f"{name}_max"] = max(getattr(b, name) for b in per_block)
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    """spp.csv, replaced atomically: a kill mid-write leaves the old file or the new one, never a torn one."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=[*COLUMNS, *EXTRA_COLUMNS])
    w.writeheader()
    w.writerows(rows)
    rundir.atomic_write_bytes(path, text.getvalue().encode())


def run_spp(cfg: DictConfig) -> dict:
    """``nfbench spp``: measure, write spp.csv and the figure into the run directory; return their paths."""
    plan = validate(cfg)
    run_dir = resolve_run_dir(cfg)
    rows = measure(cfg, plan)
    write_csv(rows, run_dir / CSV_NAME)
    figures = plot_model(rows, run_dir / "spp", cfg.spp.formats)
    first, last = rows[0], rows[-1]
    log.info(
        "%s / %s (%s), %d blocks: forward variance %.3g ... %.3g, backward variance %.3g ... %.3g "
        "(shallowest ... deepest block); %s",
        cfg.model.name,
        cfg.init.name,
        first["weights"],
        len(rows),
        first["fwd_var"],
        last["fwd_var"],
        first["bwd_var"],
        last["bwd_var"],
        run_dir / CSV_NAME,
    )
    return {"csv": str(run_dir / CSV_NAME), "figures": [str(p) for p in figures]}


def log_spp(loggers: Loggers, net: nn.Module, cfg: DictConfig, loader: DataLoader, num_classes: int, step: int) -> None:
    """Scalars ``spp_<stat>/block_NN`` of ``net`` on the first ``spp.batch_size`` images of ``loader``, for the
    run's step-wise curves (TensorBoard, wandb).

    For ``trainer.log_spp_every``: the same batch (and, with ``spp.labels=random``, the same labels,
    drawn from ``seed``) every time, so the curves show the network changing.  The model is left as
    it was: parameter gradients untouched, buffers (BatchNorm running statistics) restored, and the
    global RNG unchanged, so a run logs its SPP without changing its result.
    """
    device = next(net.parameters()).device
    saved = {k: v.clone() for k, v in net.named_buffers()}
    with torch.random.fork_rng(devices=[]):
        x, y = next(iter(loader))
        x, y = x[: cfg.spp.batch_size], y[: cfg.spp.batch_size]
        if cfg.spp.labels == "random":
            y = torch.randint(num_classes, (len(y),), generator=torch.Generator().manual_seed(cfg.seed))
        stats = block_stats(cast(ResNet, net), x.to(device), y.to(device))
    with torch.no_grad():
        for k, v in net.named_buffers():
            v.copy_(saved[k])
    loggers.log_scalars({f"spp_{name}/block_{b.block:02d}": getattr(b, name) for b in stats for name in STATS}, step)
