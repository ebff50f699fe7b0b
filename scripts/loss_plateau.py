#!/usr/bin/env python3
"""How long a run sits at the uniform-prediction plateau: the first training step whose loss is below
``--below`` (default 2.2, about 0.1 under ln 10 = 2.303 for ten classes), read from each run's
TensorBoard ``train/loss_step`` (logged every ``trainer.log_every`` steps), averaged per arm.

    python scripts/loss_plateau.py RUNS_DIR [--below 2.2]

RUNS_DIR holds ``<arm>/seed<k>/`` run directories (scripts/cpu_study.sh's layout). Prints one line per
arm: the step for each seed and their mean.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Optional

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def first_step_below(run_dir: Path, below: float) -> Optional[int]:
    """The first logged step (counted from 1) whose training loss is under ``below``; None if none is."""
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    if "train/loss_step" not in acc.Tags()["scalars"]:
        return None
    return next((e.step + 1 for e in acc.Scalars("train/loss_step") if e.value < below), None)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--below", type=float, default=2.2)
    args = parser.parse_args(argv)
    for arm in sorted(p for p in args.runs.iterdir() if p.is_dir()):
        steps = [first_step_below(seed, args.below) for seed in sorted(arm.glob("seed*")) if (seed / "tb").is_dir()]
        known = [s for s in steps if s is not None]
        mean = f"{statistics.fmean(known):.0f}" if known and len(known) == len(steps) else "-"
        print(f"{arm.name:26s} first step with loss < {args.below}: {steps}  mean {mean}")


if __name__ == "__main__":
    main()
