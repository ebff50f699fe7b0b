"""Shared fixtures: configs composed exactly as the CLI composes them, and real CIFAR-10 data."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Callable

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nfbench.cli.main import CONF_DIR
from nfbench.configstore import register_configs

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
IMAGENET_SAMPLE = SHARED_DATA.with_name("imagenet-sample-120.tar.gz")

# A tiny, fast training setup for tests that check mechanics rather than accuracy.
TINY = [
    "data=digits",
    "data.train_subset=256",
    "data.test_subset=128",
    "data.batch_size=32",
    "model=resnet20",
    "model.width=4",
    "trainer.epochs=2",
    "trainer.progress=false",
]


@pytest.fixture(scope="session")
def make_cfg() -> Callable[..., DictConfig]:
    """compose(overrides, run_dir) -> the config `nfbench train OVERRIDES` would run."""
    register_configs()

    def make(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
        extra = [f"trainer.run_dir={run_dir}"] if run_dir is not None else []
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            return compose("config", overrides=[*overrides, *extra])

    return make


@pytest.fixture(scope="session")
def cifar10_jpeg_subset(tmp_path_factory) -> Path:
    """A class-balanced subset of the real CIFAR-10 JPEGs: 200 train and 100 test images per class.

    Extracted from ../shared/data/cifar10-jpeg.tar.gz into an ImageFolder tree.
    """
    if not SHARED_DATA.exists():
        pytest.skip(f"real CIFAR-10 JPEGs not found at {SHARED_DATA}")
    quota = {"train": 200, "test": 100}
    taken: dict[tuple[str, str], int] = {}
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    with tarfile.open(SHARED_DATA, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 4:
                continue
            split, cls = parts[-3], parts[-2]
            key = (split, cls)
            if split in quota and taken.get(key, 0) < quota[split]:
                taken[key] = taken.get(key, 0) + 1
                member.name = str(Path(split, cls, parts[-1]))
                tar.extract(member, root, filter="data")
    return root


@pytest.fixture(scope="session")
def imagenet_sample(tmp_path_factory) -> list[Path]:
    """The 120 real ImageNet JPEGs of ../shared/data/imagenet-sample-120.tar.gz (97 colour, 23 grayscale, one
    per class), unpacked, in sorted order."""
    if not IMAGENET_SAMPLE.exists():
        pytest.skip(f"real ImageNet sample not found at {IMAGENET_SAMPLE}")
    root = tmp_path_factory.mktemp("imagenet-sample")
    with tarfile.open(IMAGENET_SAMPLE, "r:gz") as tar:
        tar.extractall(root, filter="data")
    files = sorted(root.glob("imagenet-sample/*.JPEG"))
    assert len(files) == 120, f"{IMAGENET_SAMPLE} holds {len(files)} JPEGs, not 120"
    return files
