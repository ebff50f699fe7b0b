"""What every command that builds a network needs of its process: the device, seeding, determinism,
and the run directory (``nfbench train``, ``spp`` and ``summary`` alike)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from nfbench.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """``trainer.device`` as a device of this machine; a ConfigError (one line, or an invalid point of a
    sweep) for a CUDA device it does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name[5:]) if name.startswith("cuda:") else 0
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(f"trainer.device={name} is not on this machine ({have}): use trainer.device=cpu or auto")
    return torch.device(name)


def seed_all(*key: int) -> None:
    """Seed Python, NumPy and torch from a tuple (seed, epoch, rank): no collisions across the tuple."""
    s = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def set_deterministic(on: bool) -> None:
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    torch.use_deterministic_algorithms(on, warn_only=True)


def resolve_run_dir(cfg: DictConfig) -> Path:
    """Hydra's output directory when running under Hydra, else ``trainer.run_dir``."""
    if cfg.trainer.run_dir:
        return Path(cfg.trainer.run_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    raise ValueError("no run directory: set trainer.run_dir=PATH when calling train() outside Hydra")
