"""``validate(cfg)``: every check a config passes before any data loads, each where its object is built.

Hydra has already refused wrong types, values outside a closed set and keys the selected options do
not have (nfbench/config.py).  The value checks (:func:`nfbench.config.check_values`) come first: they
need no torch, so a value refused there is answered in under a second.  Then the objects a run is made
of are built, each applying its own rules once: the data set's name, the scheme (``init.*``:
:class:`nfbench.schemes.Scheme`) and the model planned for that scheme (``model.*`` and the pair:
:func:`nfbench.models.plan_model`).  The plan is returned, and training builds its network from it.
This module sits above the schema and the registries, so neither imports the other for checking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from omegaconf import DictConfig

from nfbench.config import Config, check_keys, check_values, per_rank_batch

if TYPE_CHECKING:
    from nfbench.models import ModelPlan


def validate(cfg: DictConfig | Config) -> "ModelPlan":
    """Fail before any data loads on a value or name that cannot work, naming the key and what is
    allowed; return the checked model plan (its scheme built)."""
    check_keys(cfg)
    check_values(cfg)
    from nfbench import loggers
    from nfbench.data.sets import DATASETS
    from nfbench.engine import hooks
    from nfbench.engine.distributed import detect
    from nfbench.models import plan_model
    from nfbench.schemes import build_scheme

    DATASETS.get(cfg.data.name)
    loggers.check(cast(DictConfig, cfg.logger))  # a node of the composed config, typed dict[str, Any] by its schema
    hooks.check(cast(DictConfig, cfg.hooks))
    env = detect()  # torchrun's or SLURM's processes, else the ones trainer.devices starts
    per_rank_batch(cfg.data.batch_size, env.world_size if env.enabled else cfg.trainer.devices)
    return plan_model(cfg.model, build_scheme(cfg.init))
