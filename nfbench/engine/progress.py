"""How a run shows its progress: a tqdm bar on a terminal, plain lines elsewhere, a summary at the end.

Without a terminal (SLURM, nohup, CI) a bar's carriage-return redraws fill the log file with
hundreds of partial lines, so there a plain line goes to the log every ``trainer.progress_every_s``
seconds instead, as timm's train.py does.  The training loop asks :meth:`Progress.due` at the
steps where it reads the device anyway (``trainer.log_every``), and reads the sums only when
the answer is yes.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

log = logging.getLogger("nfbench")


def clock(seconds: float) -> str:
    """H:MM:SS, rounded to the second."""
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """The training loop's progress display on rank 0 (``enabled`` is false elsewhere and with
    ``trainer.progress=false``).  ``tty`` defaults to whether stderr, where tqdm draws, is a terminal."""

    def __init__(self, enabled: bool, epochs: int, every_s: float, tty: Optional[bool] = None) -> None:
        self.enabled, self.epochs, self.every_s = enabled, epochs, every_s
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.last_line = time.monotonic()
        self.bar = None

    def wrap(self, loader: Iterable, epoch: int) -> Iterable:
        """``loader`` itself, or a tqdm bar over it on a terminal (``epoch`` counts from 0)."""
        self.close()
        if not (self.enabled and self.tty):
            return loader
        from tqdm.auto import tqdm

        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False, dynamic_ncols=True, unit="batch")
        self.bar = bar
        return bar

    def due(self) -> bool:
        """Whether :meth:`show` would show anything now: always with a bar, else once the interval has passed."""
        return self.enabled and (self.bar is not None or time.monotonic() - self.last_line >= self.every_s)

    def show(
        self, epoch: int, done: int, steps: int, loss: float, lr: float, images_per_s: float, eta_s: float
    ) -> None:
        """The bar's postfix, or one plain line: ``epoch`` counts from 0, ``done`` steps of ``steps``."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", img_s=f"{images_per_s:.0f}", refresh=False)
            return
        self.last_line = time.monotonic()
        log.info(
            "epoch %d/%d  step %d/%d  loss %.4f  lr %.4g  %.0f img/s  ETA %s",
            epoch + 1,
            self.epochs,
            done,
            steps,
            loss,
            lr,
            images_per_s,
            clock(eta_s),
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _top1(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def summary_line(run_dir: Path, result: dict) -> str:
    """The run's last word: where it is, how it ended, its final and best top-1, how long it took.

    The best top-1 is the validation split's when the run has one (``best_val_top1``); otherwise the
    best test top-1, labelled test-selected, since choosing an epoch by its test score flatters it.
    """
    if result.get("best_val_top1") is not None:
        best = f"best val top-1 {_top1(result['best_val_top1'])}"
    else:
        best = f"best test top-1 {_top1(result.get('best_test_top1'))} (test-selected)"
    wall = result["wall_s"]
    return (
        f"run {run_dir}  {result['status']}  test top-1 {_top1(result.get('test_top1'))}  {best}  "
        f"wall {clock(wall)} ({wall:.1f} s)"
    )
