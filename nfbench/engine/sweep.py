"""Whether this process runs a job of a Hydra sweep: the one test training, the summary and the sweeper's
objective share.  Free of torch, as the command's first checks are."""

from __future__ import annotations


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra sweep (``-m``), whichever sweeper drives it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
