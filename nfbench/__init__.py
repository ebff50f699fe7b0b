"""nfbench: reproduce the benchmarks of residual networks trained without batch normalisation.

The Python face (nfbench/api.py): ``create_model``, ``list_models``, ``list_schemes``, ``list_datasets``,
``list_loggers``, ``list_hooks``, ``train``, ``compose`` and ``load_run``; the registration decorators of
every axis a user extends (docs/extending.md): ``register_scheme``, ``register_dataset``, ``register_logger``,
``register_hook``.  Each is imported on first use, so ``import nfbench`` (the command's first step) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_PUBLIC = {
    **{
        name: "nfbench.api"
        for name in (
            "create_model",
            "list_models",
            "list_schemes",
            "list_datasets",
            "list_loggers",
            "list_hooks",
            "train",
            "compose",
        )
    },
    "load_run": "nfbench.rundir.load",
    "register_scheme": "nfbench.schemes",
    "register_dataset": "nfbench.data.sets",
    "register_logger": "nfbench.loggers",
    "register_hook": "nfbench.engine.hooks",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'nfbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
