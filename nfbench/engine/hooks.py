"""Per-epoch hooks: code of the user's that runs at the end of every epoch, chosen in the ``hooks`` config
group (conf/hooks/; ``hooks=[NAME,...]``), the way detectron2's ``HookBase.after_step`` carries its extras.

A hook is a class registered with :func:`register_hook` under the name ``hooks=NAME`` selects, with the
dataclass of its keys (``config``: Hydra's schema of ``hooks.NAME.*``, nfbench.configstore).  The loop builds
every selected hook once per process after the restore (:func:`build_hooks`) and calls
``after_epoch(epoch, row, loop)`` on every rank once an epoch's metrics are written and its checkpoint saved:
``epoch`` counts from 1, ``row`` is the epoch's line of metrics.jsonl, ``loop`` the whole state (model,
optimiser, record; :class:`nfbench.engine.state.Loop`).  Hooks observe the run: one that changed the weights,
the optimiser or the random state would make the run other than its config says (and a resume could not
repeat it), so ``hooks.*`` may change on resume (nfbench.rundir.RESUME_SAFE).  Side effects (files, logs)
are rank 0's alone: ``loop.env.is_main``.  No hook is built in; docs/extending.md adds one.  This module
imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

from omegaconf import DictConfig

from nfbench.registry import Registry


class Hook(Protocol):
    """A per-epoch hook, built from its ``hooks.NAME`` node and the run directory."""

    config: ClassVar[type]  # the dataclass of its keys

    def __init__(self, node: DictConfig, run_dir: Path) -> None: ...

    def after_epoch(self, epoch: int, row: dict, loop: Any) -> None:
        """``loop``: the :class:`nfbench.engine.state.Loop` (not imported here: the loop holds the hooks)."""


@dataclass
class NoKeys:
    """A hook without keys of its own."""


HOOKS: Registry[type[Hook]] = Registry("hook")


def register_hook(name: str) -> Callable[[type], type]:
    """Register the decorated hook class as ``hooks=name`` (see :class:`Hook`)."""
    return HOOKS.register(name)


def build_hooks(hooks: DictConfig, run_dir: Path) -> list[Hook]:
    """The selected hooks (``cfg.hooks``: name -> its keys), in the order selected."""
    return [HOOKS.get(str(name))(node, run_dir) for name, node in hooks.items()]


def check(hooks: DictConfig) -> None:
    """Every selected hook is a registered one (validation, before any data loads)."""
    for name in hooks:
        HOOKS.get(str(name))
