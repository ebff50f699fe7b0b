"""Distributed training in one place: find the rank, join the group, keep side effects on rank 0.

Three ways in, one code path:
- ``torchrun`` (or any launcher) sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
- SLURM with several tasks (``srun``, submitit): SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, with the
  master address taken from the job's node list by submitit's TorchDistributedEnvironment;
- ``trainer.devices=N`` on one machine: :func:`spawn` starts N worker processes itself.
NCCL on GPUs, gloo on the CPU.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from nfbench.engine.preemption import SIGNALS


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _from_slurm() -> bool:
    """Export torch's variables from SLURM's when this process is one of several SLURM tasks."""
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or "RANK" in os.environ:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def detect() -> DistEnv:
    """The rank of this process, from torchrun's or SLURM's environment; (0, 0, 1) when alone."""
    _from_slurm()
    if "WORLD_SIZE" not in os.environ:
        return DistEnv()
    return DistEnv(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ["WORLD_SIZE"]),
    )


def setup(env: DistEnv, device_type: str) -> torch.device:
    """Join the process group (if several processes) and return this rank's device."""
    if device_type == "cuda":
        device = torch.device("cuda", env.local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if env.enabled and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device_type == "cuda" else "gloo",
            rank=env.rank,
            world_size=env.world_size,
            device_id=device if device_type == "cuda" else None,
        )
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum tensors over ranks in place (a no-op in a single process)."""
    if dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (used to stop all ranks at one step)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def min_over_ranks(n: int, device: torch.device) -> int:
    """The smallest ``n`` over ranks (e.g. the test batches every rank has)."""
    if not dist.is_initialized():
        return n
    t = torch.tensor([n], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def broadcast_object(obj: Any) -> Any:
    """Rank 0's value of ``obj`` on every rank (e.g. the run directory, which each rank's Hydra
    may have timestamped differently under torchrun)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if not torch.cuda.is_available():
        # The CPU's cores are shared between the workers.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    fn(*args)


def spawn(world_size: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``world_size`` fresh processes that form one group on this machine.

    torch.multiprocessing watches the workers: if one raises, the others are terminated and the
    error (with the worker's traceback) is raised here, so no rank is left hanging.  A SIGTERM, SIGINT or
    SIGUSR1/2 sent to this process is passed on to the workers, which checkpoint and stop.
    """
    import torch.multiprocessing as mp

    ctx = mp.start_processes(
        _worker, args=(world_size, free_port(), fn, args), nprocs=world_size, join=False, start_method="spawn"
    )

    def forward(signum: int, frame: Optional[object]) -> None:
        for p in ctx.processes:
            if p.is_alive():
                os.kill(p.pid, signum)

    previous = {s: signal.signal(s, forward) for s in SIGNALS}
    try:
        while not ctx.join():
            pass
    except mp.ProcessExitedException as e:
        if e.exit_code is not None and e.exit_code > 128:  # a worker stopped on a signal after checkpointing
            raise SystemExit(e.exit_code) from None
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
