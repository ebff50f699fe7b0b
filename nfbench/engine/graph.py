"""``trainer.cuda_graph``: the whole training step captured once in a CUDA graph and replayed per batch.

A CIFAR network at batch 128 is bound by the host launching its kernels (benchmarks/README.md:
ResNet-18 takes about 7 ms a step on an H200 where its arithmetic needs under 1 ms).  A replay
launches the step's hundreds of kernels (forward, loss, backward, clipping, the SGD update and the
epoch metrics' per-step figures) in one call.  This follows PyTorch's "whole-network capture"
recipe (CUDA semantics notes, CUDA Graphs): static input buffers, warm-up iterations on a side
stream, capture on that stream, then per batch a copy into the buffers and a replay.

What makes the replayed trajectory the eager one:

- The warm-up steps are real training steps on real batches.  They create what the capture needs
  to exist already (SGD's momentum buffers, cuDNN's and cuBLAS's state).  Captured kernels do not
  run, so the batch seen at capture is trained by replaying the graph right after.
- The learning rate.  A captured step would keep the float it saw, so during capture each
  parameter group's ``lr`` is a one-element device tensor, which the fused SGD kernel reads on the
  device at every replay.  Everywhere else the groups keep their floats (scheduler, logs,
  checkpoints, an eager step), and before a replay a float the scheduler changed is written into its
  tensor (one fill kernel, only when it changed).
- BatchNorm's running statistics and batch counter are updated in place by captured kernels.
- A batch of another shape (a last partial batch) runs as an eager step, on the graph's own
  gradient tensors.

Refused with it (:func:`nfbench.config.check_values`, :func:`check_device`): fp16 (GradScaler's
step reads its overflow flag on the host), mixup and CutMix (timm draws them on the host),
``trainer.compile`` (two graph makers over one step), several processes (DDP's gradient buckets
are not captured here), and a device other than CUDA.  Clipping by norm and AGC compute on the device
and are captured.  On a CPU the same object runs every step eagerly, through the same code
(:attr:`GraphedStep.capture` is False): that is how the CPU tests check it.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Iterator, Optional

import torch

from nfbench.engine.step import StepObjects, train_step
from nfbench.errors import ConfigError

WARMUP_STEPS = 3  # PyTorch's examples warm up 3 iterations before capturing


def check_device(device: torch.device, world_size: int) -> None:
    """Refuse ``trainer.cuda_graph=true`` where it cannot run, in one line naming the fix.

    A refusal rather than an eager fallback: a run asked to be graphed that silently is not would
    time, and be compared, as something it is not (the other keys are checked in config.check_values).
    """
    if device.type != "cuda":
        raise ConfigError(
            f"trainer.cuda_graph=true needs a CUDA device, and this run trains on {device.type}: "
            "set trainer.cuda_graph=false (or run on a GPU)"
        )
    if world_size > 1:
        raise ConfigError(
            f"trainer.cuda_graph=true trains one process, and this run has {world_size}: "
            "set trainer.cuda_graph=false for DDP"
        )


class GraphedStep:
    """One training step on a batch: ``step(x, y) -> (mean loss, top-1 hits)``, as device tensors.

    ``capture`` (default: on CUDA) replays a captured graph after ``warmup_steps`` eager steps;
    without it every step runs eagerly through the same function, the learning rates read from
    device tensors as in the graph.  The optimiser must be SGD, fused on CUDA (its kernel reads a
    tensor learning rate on the device; the foreach kernel would read it on the host).
    """

    def __init__(
        self,
        objects: StepObjects,
        channels_last: bool = False,
        warmup_steps: int = WARMUP_STEPS,
        capture: Optional[bool] = None,
    ) -> None:
        # Autocast's cache of cast weights must not live across a capture (PyTorch's CUDA graph notes);
        # casting again gives the same values.
        self.objects = replace(objects, amp={**objects.amp, "cache_enabled": False})
        self.opt = opt = objects.opt
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.device = next(objects.net.parameters()).device
        self.capture = self.device.type == "cuda" if capture is None else capture
        if self.capture and not all(group.get("fused") for group in opt.param_groups):
            raise ValueError("a captured step needs fused SGD (nfbench.engine.optim.build_optimizer on CUDA)")
        self.warmup_left = warmup_steps
        self.stream = torch.cuda.Stream(self.device) if self.capture else None
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.x: Optional[torch.Tensor] = None  # the static input buffers, shaped by the first batch
        self.y: Optional[torch.Tensor] = None
        self.loss: Optional[torch.Tensor] = None  # the static outputs of the captured step
        self.hits: Optional[torch.Tensor] = None
        self.lrs: list[torch.Tensor] = []  # one device tensor per parameter group
        self.lrs_hold: list[float] = []  # the floats those tensors hold
        self.replays = 0
        self.eager_steps = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on the batch (``x`` on any device, in any memory format); its loss and top-1 hits."""
        if self.x is None:
            self.x = torch.empty(x.shape, dtype=x.dtype, device=self.device, memory_format=self.memory_format)
            self.y = torch.empty(y.shape, dtype=y.dtype, device=self.device)
        assert self.y is not None  # made with self.x, just above or at the first call
        if x.shape != self.x.shape or y.shape != self.y.shape:
            return self._eager(x, y)
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        if self.warmup_left > 0:
            self.warmup_left -= 1
            with self._side_stream():
                self.opt.zero_grad(set_to_none=True)
                return self._step(self.x, self.y)
        self._sync_lrs()
        if not self.capture:  # the graph's step, run eagerly: tensor learning rates, grads made afresh
            self.opt.zero_grad(set_to_none=True)
            with self._tensor_lrs():
                return self._step(self.x, self.y)
        if self.graph is None:
            self._capture()
        self.graph.replay()  # type: ignore[union-attr]
        self.replays += 1
        return self.loss, self.hits  # type: ignore[return-value]

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The one training step (:func:`nfbench.engine.step.train_step`), on integer labels: what is captured."""
        return train_step(self.objects, x, y, y)

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A step outside the graph (a batch of another shape).  Once captured, the gradients are zeroed,
        not dropped: the graph's tensors stay the parameters' ``.grad`` (0 + g is g exactly)."""
        self.eager_steps += 1
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        y = y.to(self.device, non_blocking=True)
        with self._side_stream():
            self.opt.zero_grad(set_to_none=self.graph is None)
            return self._step(x, y)

    def _capture(self) -> None:
        """Capture the step on the warm-up stream; its kernels do not run (the replay that follows does)."""
        self.opt.zero_grad(set_to_none=True)  # backward then makes .grad in the graph's own memory pool
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a pin-memory thread allocating host memory meanwhile does not break the capture.
        with self._tensor_lrs(), torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode="thread_local"):
            self.loss, self.hits = self._step(self.x, self.y)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def _side_stream(self) -> Iterator[None]:
        """Eager work on the capture stream (PyTorch's warm-up recipe), ordered after and before the
        current stream's; no-op without capture."""
        if self.stream is None:
            yield
            return
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            yield
        current.wait_stream(self.stream)

    @contextlib.contextmanager
    def _tensor_lrs(self) -> Iterator[None]:
        """The parameter groups' learning rates as the device tensors, for as long as the step is built."""
        floats = [group["lr"] for group in self.opt.param_groups]
        if not self.lrs:
            self.lrs = [torch.tensor(float(lr), dtype=torch.float32, device=self.device) for lr in floats]
            self.lrs_hold = list(floats)
        try:
            for group, lr in zip(self.opt.param_groups, self.lrs):
                group["lr"] = lr
            yield
        finally:
            for group, lr in zip(self.opt.param_groups, floats):
                group["lr"] = lr

    def _sync_lrs(self) -> None:
        """Write each learning rate the scheduler changed into its tensor (a kernel, no host sync)."""
        for k, group in enumerate(self.opt.param_groups):
            if self.lrs and group["lr"] != self.lrs_hold[k]:
                self.lrs[k].fill_(group["lr"])
                self.lrs_hold[k] = group["lr"]
