"""Optimiser, parameter groups, learning-rate schedule and gradient clipping."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, MultiStepLR, SequentialLR

from nfbench.config import OptimConfig, SchedConfig
from nfbench.models.resnet import Scalar, ScalarLRBiasLinear

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def classifier(net: nn.Module) -> nn.Module:
    """The final linear layer, found from the model's structure (our ResNets' head, timm's API)."""
    head = getattr(net, "head", None)
    if head is not None and isinstance(getattr(head, "fc", None), nn.Linear):
        return head.fc
    get_classifier = getattr(net, "get_classifier", None)
    if get_classifier is not None:
        return get_classifier()
    raise TypeError(f"{type(net).__name__} exposes no classifier (expected .head.fc or .get_classifier())")


def param_groups(net: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split parameters by the module that owns them.

    - scalars (LearnScalar, Fixup, SkipInit: :class:`Scalar` modules, and the bias of a
      :class:`ScalarLRBiasLinear`, Fixup's classifier): lr x ``scalar_lr_mult`` (Fixup's reference
      code uses 0.1), no weight decay when ``no_decay_scalars``;
    - biases and norm affines: no weight decay when ``no_decay_bias``;
    - everything else: the base lr and ``weight_decay``.
    Empty groups are dropped.
    """
    scalars, no_decay, decay = [], [], []
    for module in net.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, Scalar) or (isinstance(module, ScalarLRBiasLinear) and p is module.bias):
                scalars.append(p)
            elif cfg.no_decay_bias and (isinstance(module, _NORMS) or name == "bias"):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [
        dict(name="weights", params=decay, weight_decay=cfg.weight_decay, lr=cfg.lr),
        dict(name="no_decay", params=no_decay, weight_decay=0.0, lr=cfg.lr),
        dict(
            name="scalars",
            params=scalars,
            lr=cfg.lr * cfg.scalar_lr_mult,
            weight_decay=0.0 if cfg.no_decay_scalars else cfg.weight_decay,
        ),
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(net: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD with momentum; the multi-tensor (foreach) implementation, fused on CUDA."""
    fused = device.type == "cuda"
    return torch.optim.SGD(
        param_groups(net, cfg),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
        foreach=None if fused else True,
    )


def build_scheduler(opt: torch.optim.Optimizer, cfg: SchedConfig, epochs: int, steps_per_epoch: int) -> LRScheduler:
    """Cosine (Civitelli et al.: stepped every epoch), multi-step (Fixup) or constant, with linear warmup.

    The scheduler counts epochs, or optimiser steps when ``per_step``; call ``step()`` accordingly.
    """
    per_unit = steps_per_epoch if cfg.per_step else 1
    total = epochs * per_unit
    warmup = int(round(cfg.warmup_epochs * per_unit))
    if cfg.name == "cosine":
        main: LRScheduler = CosineAnnealingLR(opt, T_max=total - warmup, eta_min=cfg.min_lr)
    elif cfg.name == "multistep":
        main = MultiStepLR(opt, milestones=[m * per_unit - warmup for m in cfg.milestones], gamma=cfg.gamma)
    else:
        main = ConstantLR(opt, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    ramp = LinearLR(opt, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(opt, [ramp, main], milestones=[warmup])


def clip_gradients(net: nn.Module, cfg: OptimConfig) -> None:
    """Clip by global norm, or adaptively per unit (AGC, Brock et al. 2021b) with the classifier excluded."""
    if cfg.clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad_norm, foreach=True)
    elif cfg.agc > 0:
        from timm.utils.agc import adaptive_clip_grad

        head = {id(p) for p in classifier(net).parameters()}
        params: Iterable[torch.Tensor] = [p for p in net.parameters() if id(p) not in head and p.grad is not None]
        adaptive_clip_grad(params, clip_factor=cfg.agc, eps=1e-3)
