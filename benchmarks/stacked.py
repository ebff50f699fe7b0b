"""The alternative to a pack's streams (issue 23): K copies of one network trained as one network.

Their parameters are stacked along a new first dimension (``torch.func.stack_module_state``) and the
forward is ``torch.func.vmap`` of ``torch.func.functional_call`` over (parameters, batch): every
convolution of the K copies becomes one grouped convolution of K groups, every matrix product one
batched product, so the GPU sees a few large kernels instead of K streams of small ones.  The K losses
(each the mean over its own batch) are summed for one backward, which gives each copy the gradient of
its own loss; one SGD with nfbench's parameter groups (the copies' groups, their tensors stacked)
updates all K.  The step is nfbench's own: :class:`nfbench.engine.graph.GraphedStep` captures
:func:`nfbench.engine.step.train_step` over a :class:`StackedNet` and a :class:`StackedLoss`.

Exactness (tests/test_packed.py): the forward, loss and SGD update are those of K separate steps bit
for bit, but the weight gradients of a grouped convolution are summed in another order than a single
one's, so the weights drift from the separate runs' in float32 rounding (about 1e-8 after a step on a
CPU).  It is benchmarked (benchmarks/packed.py, mode ``stacked``), not used by the runner.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from nfbench.config import OptimConfig
from nfbench.engine.optim import param_groups


class StackedNet(nn.Module):
    """K networks of one architecture as one module: ``forward(x)`` takes their K batches one after the other
    (``x``: K * B images, so that a channels_last batch stays 4-D) and returns their logits the same way."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(list(nets))
        self.names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self.names])
        self.buffer_names = list(buffers)
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[n].clone())
        self.k = len(nets)
        self.base = [copy.deepcopy(nets[0]).to("meta")]  # the architecture alone, outside the module tree
        self.origin = {id(p): self.stacked[i] for i, (n, p) in enumerate(nets[0].named_parameters()) if n in self.names}

    def _one(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base[0], (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(zip(self.names, self.stacked))
        buffers = {n: getattr(self, f"buffer{i}") for i, n in enumerate(self.buffer_names)}
        xs = x.view(self.k, x.shape[0] // self.k, *x.shape[1:])
        logits = vmap(self._one)(params, buffers, xs)
        return logits.reshape(-1, logits.shape[-1])

    def copy_weights(self, k: int) -> dict[str, torch.Tensor]:
        """Copy ``k``'s parameters by their names in the original network."""
        return {n: p[k] for n, p in zip(self.names, self.stacked)}


class StackedLoss(nn.Module):
    """The sum over the K copies of each copy's loss (``criterion``, a mean over its own batch)."""

    def __init__(self, criterion: nn.Module, k: int) -> None:
        super().__init__()
        self.criterion, self.k = criterion, k

    def per_copy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = logits.shape[0] // self.k
        return torch.stack(
            [self.criterion(logits[i * n : (i + 1) * n], target[i * n : (i + 1) * n]) for i in range(self.k)]
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_copy(logits, target).sum()


def stacked_optimizer(stacked: StackedNet, first: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.SGD:
    """nfbench's SGD (nfbench.engine.optim.build_optimizer) with the parameter groups of ``first`` (one of the
    K copies), each of its tensors replaced by the stacked one."""
    groups = [{**g, "params": [stacked.origin[id(p)] for p in g["params"]]} for g in param_groups(first, cfg)]
    fused = device.type == "cuda"
    return torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        fused=fused or None,
        foreach=None if fused else True,
    )
