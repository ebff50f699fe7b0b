"""The loaders that feed training and evaluation, over the data sets of :mod:`nfbench.data`.

In-memory data sets are served and augmented on the training device (:mod:`nfbench.data.device`);
the others go through DataLoader workers, each sample's augmentation seeded from (seed, epoch,
index) so that a resumed run sees the same images as an uninterrupted one.  With ``data.decode=gpu``
those workers only read ImageNet's files, and :mod:`nfbench.data.gpu_decode` decodes and augments each
batch on the training device, from the same seeds.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from nfbench.config import DataConfig, per_rank_batch
from nfbench.data import gpu_decode
from nfbench.data.device import device_eval_loader, device_train_loader, use_device_loader
from nfbench.data.sets import DataSource
from nfbench.data.source import worker_context


class SeededSampler(DistributedSampler):
    """A ``DistributedSampler`` that yields (index, seed) pairs, the seed drawn per (run seed, epoch, index).

    DataLoader workers draw from RNGs of their own, seeded when they start: a persistent worker
    carries its stream across epochs, so a resumed run (new workers, started at a later epoch)
    augmented differently from an uninterrupted one.  Seeding every sample from the pair makes the
    epoch's stream a pure function of (seed, epoch), whichever worker builds a sample and whenever.
    """

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n = len(self.dataset)  # type: ignore[arg-type]  # torch types Dataset without __len__; ours have one
        seeds = np.random.default_rng([self.seed, self.epoch]).integers(2**63, size=n).tolist()
        return ((i, seeds[i]) for i in super().__iter__())


class SeededSamples(Dataset):
    """Item (i, seed): sample i, its transform drawing from torch's CPU RNG seeded with ``seed``
    (torchvision's transforms draw from it alone); the caller's RNG state is left as it was."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        i, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.base[i]


def _loader_options(cfg: DataConfig, pin_memory: bool) -> dict:
    return dict(
        num_workers=cfg.num_workers,
        pin_memory=pin_memory,
        persistent_workers=cfg.num_workers > 0,
        multiprocessing_context=worker_context() if cfg.num_workers > 0 else None,
    )


def eval_loader(
    cfg: DataConfig,
    src: DataSource,
    ds: Dataset,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    device: Optional[torch.device] = None,
) -> Iterable:
    """Batches of ``ds`` (the test set or the validation split) in order, every image exactly once over
    all ranks (rank r takes images r, r + world_size, ...; no padding), so summed metrics are exact.
    Served from ``device`` when the training loader is (``data.on_device``)."""
    shard = range(rank, len(ds), world_size)  # type: ignore[arg-type]
    if use_device_loader(cfg, src):
        return device_eval_loader(cfg, src, ds, shard, torch.device(device or "cpu"))
    if gpu_decode.decode_choice(cfg, src, torch.device(device or "cpu")) == "gpu":
        return gpu_decode.eval_loader(cfg, src, ds, shard, torch.device(device or "cpu"))
    return DataLoader(
        Subset(ds, shard) if world_size > 1 else ds,
        batch_size=cfg.test_batch_size,
        shuffle=False,
        **_loader_options(cfg, pin_memory),
    )


def build_loaders(
    cfg: DataConfig,
    src: DataSource,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    device: Optional[torch.device] = None,
    capture: bool = False,
) -> tuple[Iterable, Iterable]:
    """Train loader (order and augmentation depend only on seed and epoch: exact resume) and test loader
    (:func:`eval_loader`, which also serves the validation split).

    ``data.batch_size`` is the global batch: each of ``world_size`` ranks loads its share.
    In-memory data sets are served from ``device`` (default: the CPU) by
    :class:`nfbench.data.device.DeviceLoader` when ``data.on_device`` allows it, their batches built in a CUDA
    graph with ``capture`` (``trainer.cuda_graph``); ImageNet's files are decoded a batch at a time on
    ``device`` by :mod:`nfbench.data.gpu_decode` when ``data.decode`` resolves to gpu.
    """
    per_rank = per_rank_batch(cfg.batch_size, world_size)
    batched = gpu_decode.decode_choice(cfg, src, torch.device(device or "cpu")) == "gpu"
    on_device = use_device_loader(cfg, src)
    # The device loader draws each epoch's augmentation itself, in this process, from the order alone.
    sampler: DistributedSampler = (DistributedSampler if on_device else SeededSampler)(
        src.train, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    # Drop the ragged last batch: a batch of one breaks BatchNorm and skews the step size.
    drop_last = len(sampler) >= per_rank
    if on_device:
        train: Iterable = device_train_loader(
            cfg, src, sampler, per_rank, drop_last, torch.device(device or "cpu"), pin_memory, capture=capture
        )
    elif batched:
        train = gpu_decode.train_loader(cfg, src, sampler, per_rank, drop_last, torch.device(device or "cpu"))
    else:
        train = DataLoader(
            SeededSamples(src.train),
            batch_size=per_rank,
            sampler=sampler,
            drop_last=drop_last,
            **_loader_options(cfg, pin_memory),
        )
    return train, eval_loader(cfg, src, src.test, rank, world_size, pin_memory, device)
