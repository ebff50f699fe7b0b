"""One epoch of training: the steps, their metrics on the device, the divergence check, the
mid-epoch checkpoint and the stop signal.

:func:`train_one_epoch` is a generator that yields after each step but the epoch's last: a run alone
goes straight through it (:func:`nfbench.engine.loop.run_alone`), a pack of runs takes one step of
each in turn (nfbench/engine/pack.py).  Both run this one loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Generator, Iterable, Iterator, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from nfbench import rundir
from nfbench.engine import distributed
from nfbench.engine.evaluate import StopPoll
from nfbench.engine.metrics import EpochMetrics
from nfbench.engine.state import EpochProgress, Loop, Pass, checkpoint_state
from nfbench.rng import rng_state, set_rng_state

log = logging.getLogger("nfbench")


class Diverged(Exception):
    """A non-finite loss, or non-finite weights before a checkpoint; ``info`` goes to result.json."""

    def __init__(self, info: dict) -> None:
        super().__init__(info)
        self.info = info


def weights_finite(net: nn.Module) -> bool:
    """Whether every floating parameter and buffer is finite: one device read, run before each save."""
    flags = [torch.isfinite(t).all() for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def train_one_epoch(
    loop: Loop, loader: DataLoader, epoch: int, resume: Optional[EpochProgress]
) -> Generator[None, None, EpochProgress]:
    """One pass over the training set, from where ``resume`` (a mid-epoch checkpoint) left it, yielding
    after each step but the last; returns the epoch's progress.  Loss and accuracy accumulate on the
    device and are read once per ``trainer.log_every`` steps, where a non-finite loss is also checked;
    a stop signal is looked for between steps."""
    p = resume or EpochProgress()
    loop.net.train()
    steps = len(loader)
    if p.batches_done == steps:  # stopped during the evaluation: the training of this epoch is done
        set_rng_state(p.rng[loop.env.rank])
        return EpochProgress(steps, p.loss_sum, p.correct, p.seen, p.seconds)
    run = _start_pass(loop, epoch, steps, p)
    s = loop.settings
    assert loop.step is not None  # built over the restored model (nfbench.engine.loop) before any epoch
    for i, (x, y) in _batches_after(loop.progress.wrap(loader, epoch), p, loop.env.rank):
        loss, hits = loop.step(x, y)  # eager or one replay of its graph: nfbench/engine/step.py
        run.metrics.record(i, loss, hits, len(y))
        if s.per_step:
            loop.sched.step()
        done = i + 1
        if done % s.log_every == 0 or done == steps:
            _log_step(loop, run, done, loss)
        if done == steps:
            break
        _between_steps(loop, run, done)
        yield
    loop.progress.close()
    return _end_pass(loop, run)


def _start_pass(loop: Loop, epoch: int, steps: int, p: EpochProgress) -> Pass:
    # Loss, top-1 hits and images on the device, four kernels per step (nfbench/engine/metrics.py).
    # A mid-epoch checkpoint holds the sums over all ranks: rank 0 carries them on, so the
    # all-reduce at the epoch's end counts them once.
    carried = (p.loss_sum, p.correct, p.seen) if loop.env.is_main else (0.0, 0, 0)
    metrics = EpochMetrics(steps, loop.device, *carried, start=p.batches_done)
    poll = StopPoll(loop.stop, loop.settings.stop_every, steps, loop.device)
    return Pass(epoch, steps, metrics, time.perf_counter() - p.seconds, poll)


def _batches_after(batches: Iterable, p: EpochProgress, rank: int) -> Iterator[tuple[int, Any]]:
    """``enumerate(batches)`` from batch ``p.batches_done`` on.  The skipped batches are drawn, so the
    loader's own RNG advances as it did; after the last of them, the rest of the RNG is set as it was."""
    for i, batch in enumerate(batches):
        if i < p.batches_done:
            if i == p.batches_done - 1:
                set_rng_state(p.rng[rank])
            continue
        yield i, batch


def _log_step(loop: Loop, run: Pass, done: int, loss: torch.Tensor) -> None:
    """At a log step: stop on a non-finite loss so far, show progress when it is due, log the step's loss."""
    _check_finite(loop, run, done, weights=False)
    if loop.progress.due():
        loss_sum, _, seen = run.metrics.sums.tolist()
        elapsed = run.seconds()
        loop.progress.show(
            run.epoch,
            done,
            run.steps,
            loss_sum / seen,
            loop.opt.param_groups[0]["lr"],
            seen * loop.env.world_size / elapsed,
            (run.steps - done) * elapsed / done,
        )
    if loop.loggers:
        loop.loggers.log_scalars({"train/loss_step": loss.detach().item()}, run.first_step + done - 1)


def _between_steps(loop: Loop, run: Pass, done: int) -> None:
    """After step ``done`` (not the last): a mid-epoch checkpoint every ``trainer.checkpoint_every_steps``
    and on a stop signal, which then exits so the job can be requeued and resumed."""
    stopping = run.poll.asks(done)
    every = loop.settings.checkpoint_every
    if stopping or (every and done % every == 0):
        _check_finite(loop, run, done, weights=True)  # never save a diverged state
        save_last(loop, run.epoch, _snapshot(run.metrics.sums, done, run.seconds(), loop.device))
    if stopping:
        log.warning(
            "caught signal %s: checkpointed epoch %d at step %d/%d; exiting so the job can be requeued and resumed",
            loop.stop.received,
            run.epoch + 1,
            done,
            run.steps,
        )
        loop.stop.exit()


def _end_pass(loop: Loop, run: Pass) -> EpochProgress:
    """The epoch's sums over all ranks, once its losses and the weights are known finite (it is saved)."""
    if loop.device.type == "cuda":
        torch.cuda.synchronize(loop.device)
    _check_finite(loop, run, run.steps, weights=True)
    distributed.all_reduce_sum(run.metrics.sums)
    loss_sum, correct, seen = run.metrics.sums.tolist()
    return EpochProgress(run.steps, loss_sum, int(correct), int(seen), run.seconds())


def _check_finite(loop: Loop, run: Pass, done: int, weights: bool) -> None:
    """Raise :class:`Diverged` on every rank if any rank saw a non-finite loss in steps [0, ``done``)
    or, with ``weights``, holds a non-finite weight (a step's update can overflow after a finite loss)."""
    bad = run.metrics.fold(done)
    broken = bad is None and weights and not weights_finite(loop.net)
    if distributed.any_rank(bad is not None or broken, loop.device):
        raise Diverged(
            {
                "epoch": run.epoch + 1,
                "step": run.first_step + (bad[0] if bad else done - 1),
                "loss": bad[1] if bad else None,
                "weights_finite": not broken,
                "lr": loop.opt.param_groups[0]["lr"],
            }
        )


def gather_rng(state: dict) -> list:
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
    return EpochProgress(done, loss_sum, int(correct), int(seen), seconds, gather_rng(rng_state()))


def checkpoint_of(loop: Loop, epoch: int, progress: Optional[EpochProgress], wall_s: Optional[float] = None) -> dict:
    """The run's checkpoint after ``epoch`` completed epochs and, mid-epoch, ``progress`` into the next."""
    return checkpoint_state(loop.stateful(), loop.record, epoch, vars(progress) if progress else None, wall_s)


def save_last(loop: Loop, epoch: int, progress: EpochProgress) -> None:
    """A mid-epoch last.pt of ``epoch`` (from 0), trained as far as ``progress`` says; every rank waits for it."""
    if loop.env.is_main:
        rundir.save_checkpoint(loop.record.ckpt_dir / rundir.LAST, checkpoint_of(loop, epoch, progress))
    distributed.barrier()
