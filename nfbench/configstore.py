"""Hydra's config store, filled once before any config is composed: the schema (conf/config.yaml names it
first), each option's own (:data:`nfbench.config.OPTION_SCHEMAS`: ``init=nf``'s keys...), each registered
logger's and hook's keys (stored as ``nfbench_schema_logger_NAME`` and ``nfbench_schema_hooks_NAME``, which
conf/logger/NAME.yaml and conf/hooks/NAME.yaml name in their defaults), and the resolver the SLURM launcher
preset derives its tasks from.  It imports no torch, so a bad value is still refused in under a second.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from nfbench.config import OPTION_SCHEMAS, Config, tasks_per_node
from nfbench.engine.hooks import HOOKS
from nfbench.loggers import LOGGERS


def register_configs() -> None:
    """Store every schema nfbench's config groups are typed by (see the module's docstring)."""
    store = ConfigStore.instance()
    store.store(name="nfbench_schema", node=Config)
    for group, options in OPTION_SCHEMAS.items():
        for name, schema in options.items():
            store.store(name=f"nfbench_schema_{group}_{name}", node=schema)
    for group, registry in (("logger", LOGGERS), ("hooks", HOOKS)):
        for name in registry.names():
            store.store(name=f"nfbench_schema_{group}_{name}", node=registry.get(name).config)
    OmegaConf.register_new_resolver("nfbench.tasks_per_node", tasks_per_node, replace=True)
