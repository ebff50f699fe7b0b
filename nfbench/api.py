"""nfbench from Python, in the style timm users know (``import nfbench``):

    net = nfbench.create_model("resnet50", init="convshort")          # a ConvShort ResNet-50, initialised
    nfbench.list_models("resnet*"), nfbench.list_schemes()            # every name the registries hold
    metrics = nfbench.train(["model=resnet20", "init=idshort", "data=digits", "trainer.epochs=2"])
    net, cfg = nfbench.load_run(metrics["run_dir"])                   # the trained network back

Every function here is a thin face over the registries (models, schemes, data sets, loggers, hooks) and the
one training loop the ``nfbench`` command runs; nothing is configured twice.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from omegaconf import DictConfig

from nfbench.config import option_config, option_schema

Overrides = Sequence[str]


def _names(registry: Any, pattern: Optional[str]) -> list[str]:
    return [n for n in registry.names() if pattern is None or fnmatch.fnmatch(n, pattern)]


def list_models(pattern: Optional[str] = None) -> list[str]:
    """The registered architectures (``model=``), sorted; ``pattern``: a shell-style filter (``"resnet*"``)."""
    from nfbench.models import MODELS

    return _names(MODELS, pattern)


def list_schemes(pattern: Optional[str] = None) -> list[str]:
    """The registered initialisation schemes (``init=``), sorted."""
    from nfbench.schemes import SCHEMES

    return _names(SCHEMES, pattern)


def list_datasets(pattern: Optional[str] = None) -> list[str]:
    """The registered data sets (``data=``), sorted."""
    from nfbench.data.sets import DATASETS

    return _names(DATASETS, pattern)


def list_loggers(pattern: Optional[str] = None) -> list[str]:
    """The registered logger backends (``logger=``), sorted."""
    from nfbench.loggers import LOGGERS

    return _names(LOGGERS, pattern)


def list_hooks(pattern: Optional[str] = None) -> list[str]:
    """The registered per-epoch hooks (``hooks=``), sorted."""
    from nfbench.engine.hooks import HOOKS

    return _names(HOOKS, pattern)


def create_model(
    name: str, init: str = "convshort", num_classes: int = 10, in_chans: int = 3, image_size: int = 32, **kwargs: Any
) -> Any:
    """The architecture ``name`` built with scheme ``init`` and started by its initialisation, for inputs of
    ``in_chans`` x ``image_size``^2 (the stem follows the size: CIFAR's up to 64 px) and ``num_classes``.

    ``kwargs`` are the model's and the scheme's keys, as ``model.*`` and ``init.*`` (``width=16``,
    ``weights="brock"``, ``alpha=0.1`` with ``init="nf"``); every rule ``nfbench train`` applies applies
    here, in the same one-line errors (nfbench.errors.ConfigError)."""
    from nfbench.errors import ConfigError
    from nfbench.models import plan_model
    from nfbench.schemes import build_scheme

    model_keys = {f.name for f in dataclasses.fields(option_schema("model", name))} - {"name"}
    init_keys = {f.name for f in dataclasses.fields(option_schema("init", init))} - {"name"}
    unknown = sorted(set(kwargs) - model_keys - init_keys)
    if unknown:
        raise ConfigError(
            f"create_model({name!r}, init={init!r}) has no key {', '.join(unknown)}; its keys: "
            f"{', '.join(sorted(model_keys | init_keys))}"
        )
    model_cfg = option_config("model", name, **{k: v for k, v in kwargs.items() if k in model_keys})
    init_cfg = option_config("init", init, **{k: v for k, v in kwargs.items() if k in init_keys})
    return plan_model(model_cfg, build_scheme(init_cfg)).build(num_classes, in_chans, image_size)


def compose(overrides: Overrides = ()) -> DictConfig:
    """The config ``nfbench train OVERRIDES`` would run (Hydra's compose API, conf/ as the command has it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nfbench.cli.main import CONF_DIR
    from nfbench.configstore import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def train(cfg_or_overrides: Union[DictConfig, Overrides] = (), run_dir: Union[str, Path, None] = None) -> dict:
    """Train as ``nfbench train`` does and return the run's final metrics (result.json, plus ``run_dir``).

    ``cfg_or_overrides``: a composed config, or override strings (``["model=resnet20", "init=idshort"]``).
    The run directory is ``run_dir``, else ``trainer.run_dir``, else ``outputs/api/<data>/<model>-<init>/
    <time>`` as the command names its own."""
    from nfbench.engine.loop import train as train_cfg

    cfg = compose(cfg_or_overrides) if not isinstance(cfg_or_overrides, DictConfig) else cfg_or_overrides
    if run_dir is not None or not cfg.trainer.run_dir:
        cfg.trainer.run_dir = str(
            run_dir
            or Path(
                "outputs", "api", cfg.data.name, f"{cfg.model.name}-{cfg.init.name}", time.strftime("%Y-%m-%d_%H-%M-%S")
            )
        )
    return {**train_cfg(cfg), "run_dir": cfg.trainer.run_dir}
