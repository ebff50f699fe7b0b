"""nfbench: reproduce the benchmarks of residual networks trained without batch normalisation."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_run"]


def __getattr__(name: str) -> Any:
    """``nfbench.load_run`` imported on first use: ``import nfbench`` (the CLI's first step) stays light."""
    if name == "load_run":
        from nfbench.rundir.load import load_run

        return load_run
    raise AttributeError(f"module 'nfbench' has no attribute {name!r}")
