"""Stop cleanly on SIGTERM / SIGINT / SIGUSR1 / SIGUSR2: checkpoint at the next step, then exit for a requeue.

SLURM sends SIGTERM (and, with ``--signal``, SIGUSR1 or submitit's SIGUSR2) before it kills a job.
The handler only records the signal; the training loop checks it between steps, writes a
checkpoint, and then calls :meth:`StopSignal.exit`, which hands over to the handler that was
installed before ours - submitit's, which requeues the job - or exits with 128 + signal number.
The requeued job runs the same command in the same run directory and resumes from that checkpoint.
Ctrl-C (SIGINT) stops the same way, without a traceback: Python's own handler, which raises
KeyboardInterrupt, is not handed over to.

A pack (several runs in one process, nfbench/engine/pack.py) enters one :class:`StopSignal` for all
its runs and lends each a :class:`PackStop`: each run checkpoints at its next step and ends alone
(:class:`RunStopped`); once every run has, the pack exits as one run would.
"""

from __future__ import annotations

import signal
import threading
from typing import NoReturn, Optional

from nfbench.errors import Preempted

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


class StopSignal:
    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self._previous = {s: signal.signal(s, self._catch) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous = {}

    def _catch(self, signum: int, frame: object) -> None:
        self.received = signum

    def exit(self) -> NoReturn:
        """After the checkpoint: let the previous handler (submitit's requeue) act, else raise Preempted."""
        signum = self.received
        assert signum is not None
        previous = self._previous.get(signum)
        self.__exit__()
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, None)
        raise Preempted(signum)


class RunStopped(BaseException):
    """A run of a pack checkpointed on a stop signal and ends (a BaseException, as :class:`Preempted` is:
    no ``except Exception`` on the way out may take it for a failure)."""


class PackStop:
    """What a run of a pack sees of the pack's one :class:`StopSignal`: the signal received, if any.
    Entering it does nothing (the pack has entered the signal); :meth:`exit`, called once the run has
    checkpointed, ends this run alone."""

    def __init__(self, signal: StopSignal) -> None:
        self.signal = signal

    @property
    def received(self) -> Optional[int]:
        return self.signal.received

    def __enter__(self) -> "PackStop":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def exit(self) -> NoReturn:
        raise RunStopped(self.signal.received)
