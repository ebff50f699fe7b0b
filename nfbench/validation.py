"""``validate(cfg)``: every check a config passes before any work starts.

The value checks (:func:`nfbench.config.check_values`) come first: they need no torch, so a value
refused there is answered in under a second.  Then the names of the data set, model and scheme are
checked against their registries (which import torch), so a message lists the names that exist.
This module sits above the schema and the registries, so neither imports the other for checking.
"""

from __future__ import annotations

from omegaconf import DictConfig

from nfbench.config import Config, check_values, require


def check_names(c: DictConfig | Config) -> None:
    """Data set, model and scheme names against their registries, and the model-scheme pairing."""
    from nfbench.data import DATASETS
    from nfbench.models import MODELS, check_compatible
    from nfbench.schemes import SCHEMES, WEIGHT_RULES, build_scheme

    DATASETS.get(c.data.name)
    MODELS.get(c.model.name)
    SCHEMES.get(c.init.name)
    if c.init.weights is not None:
        require(c.init.weights in WEIGHT_RULES, "init.weights", c.init.weights,
                f"choose one of {', '.join(WEIGHT_RULES)}")
    check_compatible(c.model, build_scheme(c.init))


def validate(cfg: DictConfig | Config) -> None:
    """Fail before training on any value or name that cannot work, naming the key and what is allowed."""
    check_values(cfg)
    check_names(cfg)
