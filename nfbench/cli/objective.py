"""The number ``nfbench train`` hands a Hydra sweeper: the run's ``optimized_metric``.

Hydra's Optuna sweeper (``hydra/sweeper=optuna``, the ``nfbench[tune]`` extra) asks each trial's task
function for a float and calls ``study.tell`` with it.  A run that cannot give its figure must still
return one: hydra-optuna-sweeper 1.2/1.3 marks a trial whose value is not float-castable (None) as
failed, Optuna 2.x refuses NaN in ``tell``, and any exception in the task (``optuna.TrialPruned``
included: the plugin does not prune) fails the trial, which with the plugin's default
``max_failure_rate=0.0`` ends the whole search.  -inf is told, but not every Optuna 2.x storage can
hold it.  Every metric allowed here is an accuracy in percent, so :data:`WORST` = 0.0 ranks such a run
below any run that learned (chance on digits or CIFAR-10 is 10%) and keeps the search going.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

from omegaconf import DictConfig

from nfbench.config import optimized_metric
from nfbench.engine.sweep import in_multirun

log = logging.getLogger("nfbench")

WORST = 0.0


def _sweeper_reads_it() -> bool:
    """Whether this job is a trial of a sweeper that uses the returned value (Hydra's basic sweeper,
    a plain ``-m`` grid, ignores it)."""
    from hydra.core.hydra_config import HydraConfig

    return in_multirun() and not str(HydraConfig.get().sweeper.get("_target_")).endswith("BasicSweeper")


def objective(cfg: DictConfig, result: Optional[dict]) -> float:
    """``result[optimized_metric(cfg)]`` of a finished run; :data:`WORST` for a run that diverged, an
    invalid point (``result`` None) or a missing or non-finite figure."""
    if result is None:
        return WORST
    name = optimized_metric(cfg)
    if name.startswith("test_") and _sweeper_reads_it():
        log.warning(
            "the sweeper optimises %s, a test-set figure: fine for a quick look, but the tuned value is "
            "then no result to report; set data.val_size to tune on a validation split",
            name,
        )
    value = result.get(name)
    if result.get("status") != "finished" or not isinstance(value, (int, float)) or not math.isfinite(value):
        log.warning(
            "no %s from this run (status %s): the sweeper gets %s, its worst value", name, result.get("status"), WORST
        )
        return WORST
    return float(value)
