"""The random state of a process (Python, NumPy, torch, CUDA) as plain values, for checkpoints.

A checkpoint holds this state so that a resumed run draws what the uninterrupted one would have.
It is stored as tensors, lists, ints, floats and strings only, which ``torch.load(weights_only=True)``
(torch's default since 2.6) and ``timm.models.load_state_dict`` accept: NumPy's ``get_state()``
tuple pickles an ``ndarray``, which they refuse.
"""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch


def _plain_numpy(state: tuple) -> dict:
    """NumPy's ``get_state()`` tuple (legacy MT19937) as a dict with its uint32 key in an int64 tensor:
    torch's pickling of tensors (``all_gather_object``) cannot rebuild a uint32 one."""
    name, key, pos, has_gauss, cached = state
    return {
        "bit_generator": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _plain_python(state: tuple) -> dict:
    """Python's ``random.getstate()`` tuple as a dict of a version, a list of ints and the cached gaussian."""
    version, internal, gauss_next = state
    return {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss_next}


def rng_state() -> dict:
    """This process's random state, every part a tensor or a plain value."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": _plain_numpy(cast(tuple, np.random.get_state())),
        "python": _plain_python(random.getstate()),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    numpy, python = state["numpy"], state["python"]
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        (
            numpy["bit_generator"],
            numpy["key"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def from_legacy(state: dict[str, Any]) -> dict:
    """The state of nfbench checkpoints before version 3 (NumPy's and Python's tuples) as :func:`rng_state`'s."""
    return {
        **state,
        "numpy": _plain_numpy(state["numpy"]) if isinstance(state["numpy"], tuple) else state["numpy"],
        "python": _plain_python(state["python"]) if isinstance(state["python"], tuple) else state["python"],
    }
