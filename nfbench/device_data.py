"""In-memory data sets served from the training device, augmented a batch at a time there.

CIFAR-sized data fits in GPU memory as uint8 (150 MB for CIFAR-10), so the
training loop needs no worker processes and no host-to-device copies: each
batch is gathered, cropped, flipped, RandAugmented and normalised on the
device, with the same recipe as :func:`nfbench.data.transforms`.

:class:`DeviceLoader` is a drop-in for the training ``DataLoader``: it reads its
order from the same ``DistributedSampler`` (so ``sampler.set_epoch`` and the
rank shards behave exactly as before), and every random draw of an epoch comes
from a generator seeded once from torch's global RNG when iteration starts,
which ``train()`` reseeds per (seed, epoch, rank): resuming is exact, and the
augmentation is the same on CPU and CUDA.  All draws are made on the CPU and
copied to the device once per epoch, so the hot loop never waits on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, DistributedSampler, Sampler, Subset
from torchvision.transforms import v2

from nfbench.config import DataConfig
from nfbench.data import DataSource, TensorImages, TransformedFolder
from nfbench.errors import ConfigError


def in_memory(ds: Dataset) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The (uint8 images, labels) behind a data set built by ``build_source``, or None if it reads files."""
    if isinstance(ds, TransformedFolder):
        ds = ds.base
    indices = None
    if isinstance(ds, Subset):
        indices, ds = torch.as_tensor(ds.indices), ds.dataset
    if not isinstance(ds, TensorImages):
        return None
    if indices is None:
        return ds.images, ds.labels
    return ds.images[indices], ds.labels[indices]


class BatchRandAugment:
    """torchvision's RandAugment (Cubuk et al. 2020) with every sample drawing its own ops,
    applied to a whole batch one op at a time.

    ``v2.RandAugment`` picks one op for everything it is given, so on a batch it would
    augment all images alike.  Here each sample draws ``num_ops`` (op, sign) pairs exactly as
    ``v2.RandAugment.forward`` does for one image; the batch is then sorted by draw and
    torchvision's own op is applied to each contiguous group: one call per distinct draw
    (at most 24 per layer) instead of one per sample.  Measured against a per-sample loop
    and against CPU worker processes in ``benchmarks/data_pipeline.py``.
    """

    def __init__(self, num_ops: int, magnitude: int, image_size: tuple[int, int]) -> None:
        # torchvision keeps its op table and op dispatch as underscored members of the transform;
        # using them keeps the ops, magnitudes and fill identical to the per-sample path.
        self._ra = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
        self.num_ops = num_ops
        h, w = image_size
        self.ops: list[tuple[str, float, bool]] = []  # (name, magnitude, signed)
        for name, (magnitudes_fn, signed) in self._ra._AUGMENTATION_SPACE.items():
            mags = magnitudes_fn(self._ra.num_magnitude_bins, h, w)
            mag = float(mags[magnitude]) if mags is not None else 0.0
            self.ops.append((name, mag, signed and mags is not None))

    @property
    def num_keys(self) -> int:
        return 2 * len(self.ops)

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Keys (n, num_ops): op index * 2 + 1 where the magnitude is negated (signed ops only)."""
        op = torch.randint(len(self.ops), (n, self.num_ops), generator=gen)
        negative = torch.rand(n, self.num_ops, generator=gen) <= 0.5  # v2.RandAugment's own test
        signed = torch.tensor([s for _, _, s in self.ops])[op]
        return op * 2 + (negative & signed).long()

    def apply(self, x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor,
              counts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Apply layer after layer; ``perm[l]`` sorts the batch by layer l's keys, ``counts[l][k]``
        is how many samples drew key k, ``inverse[l]`` puts them back."""
        for layer in range(self.num_ops):
            grouped = x.index_select(0, perm[layer])
            start, parts = 0, []
            for key, count in enumerate(counts[layer]):
                if count:
                    name, mag, _ = self.ops[key // 2]
                    parts.append(self._ra._apply_image_or_video_transform(
                        grouped[start:start + count], name, -mag if key % 2 else mag,
                        interpolation=self._ra.interpolation, fill=self._ra._fill))
                    start += count
            x = torch.cat(parts).index_select(0, inverse[layer])
        return x


@dataclass
class Augment:
    """The training recipe of small images: random crop with zero padding, flip, RandAugment."""

    padding: int
    hflip: bool
    randaugment: Optional[BatchRandAugment] = None


@dataclass
class _EpochPlan:
    """Every random draw of one epoch, on the device; ``ra_counts`` stays on the host (slice sizes)."""

    order: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    flip: torch.Tensor
    ra_perm: Optional[torch.Tensor]
    ra_inverse: Optional[torch.Tensor]
    ra_counts: list[list[list[int]]]


def crop_flip(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor,
              flip: torch.Tensor) -> torch.Tensor:
    """Per-sample crop of the zero-padded batch at (top, left), mirrored where ``flip``.

    Matches ``v2.RandomCrop(size, padding)`` then ``v2.RandomHorizontalFlip()`` for each image,
    as one gather over the flattened padded pixels (several times faster than 4-d indexing on CPU).
    """
    b, c, h, w = x.shape
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    hp, wp = x.shape[-2:]
    rows = top[:, None] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - cols, cols)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(x.reshape(b, c, hp * wp), 2, flat).view(b, c, h, w)


class DeviceLoader:
    """Batches (x, y) of a uint8 image tensor held on ``device``: normalised float32 x, int64 y.

    Iterates in the order of ``sampler`` (a ``DistributedSampler`` for training, so
    ``loader.sampler.set_epoch`` and the rank shards work as with a ``DataLoader``; this
    rank's indices for testing),
    ``batch_size`` samples at a time, dropping a ragged last batch when ``drop_last``.
    """

    def __init__(self, dataset: Dataset, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], device: torch.device,
                 sampler: Sampler | Sequence[int],
                 drop_last: bool = False, augment: Optional[Augment] = None) -> None:
        self.dataset, self.sampler, self.batch_size, self.drop_last = dataset, sampler, batch_size, drop_last
        self.device, self.augment = device, augment
        self.images = images.to(device)
        self.labels = labels.to(device)
        # (v/255 - mean) / std as one multiply-add per pixel.
        std_t = torch.tensor(std, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(device)
        self._shift = (-torch.tensor(mean, dtype=torch.float32) / std_t).view(1, -1, 1, 1).to(device)

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mul_(self._scale).add_(self._shift)

    def _plan(self) -> _EpochPlan:
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.int64)
        n = len(self) * self.batch_size if self.drop_last else len(order)
        order = order[:n]
        aug = self.augment
        top = left = torch.zeros(n, dtype=torch.int64)
        flip = torch.zeros(n, dtype=torch.bool)
        perm = inverse = None
        counts: list[list[list[int]]] = []
        if aug is not None:
            # One draw from the global RNG seeds the whole epoch (see the module docstring).
            gen = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
            top = torch.randint(2 * aug.padding + 1, (n,), generator=gen)
            left = torch.randint(2 * aug.padding + 1, (n,), generator=gen)
            if aug.hflip:
                flip = torch.rand(n, generator=gen) < 0.5
            if aug.randaugment is not None:
                perm, inverse, counts = self._plan_randaugment(aug.randaugment, n, gen)
        dev = self.device
        return _EpochPlan(order.to(dev), top.to(dev), left.to(dev), flip.to(dev),
                          None if perm is None else perm.to(dev), None if inverse is None else inverse.to(dev), counts)

    def _plan_randaugment(self, ra: BatchRandAugment, n: int, gen: torch.Generator):
        """Keys for every sample, and per batch the sorting permutations and group sizes."""
        keys = ra.draw(n, gen)
        perm = torch.empty(ra.num_ops, n, dtype=torch.int64)
        inverse = torch.empty_like(perm)
        counts = []
        for start in range(0, n, self.batch_size):
            k = keys[start:start + self.batch_size].T  # (num_ops, b)
            p = torch.argsort(k, dim=1, stable=True)
            perm[:, start:start + k.shape[1]] = p
            inverse[:, start:start + k.shape[1]] = torch.argsort(p, dim=1)
            counts.append(torch.stack([torch.bincount(row, minlength=ra.num_keys) for row in k]).tolist())
        return perm, inverse, counts

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self._plan()
        aug = self.augment
        n = len(plan.order)
        for b, start in enumerate(range(0, n, self.batch_size)):
            sl = slice(start, min(start + self.batch_size, n))
            idx = plan.order[sl]
            x = self.images.index_select(0, idx)
            if aug is not None:
                if aug.padding or aug.hflip:
                    x = crop_flip(x, aug.padding, plan.top[sl], plan.left[sl], plan.flip[sl])
                if aug.randaugment is not None:
                    x = aug.randaugment.apply(x, plan.ra_perm[:, sl], plan.ra_inverse[:, sl],  # type: ignore[index]
                                              plan.ra_counts[b])
            yield self.normalise(x), self.labels.index_select(0, idx)


def use_device_loader(cfg: DataConfig, src: DataSource) -> bool:
    """``data.on_device``: true, false, or auto (whenever both splits are held in memory and
    trained at their native size; the DataLoader path serves image folders and resizing)."""
    if cfg.on_device is False:
        return False
    train = in_memory(src.train)
    why = None
    if train is None or in_memory(src.test) is None or src.recipe != "small":
        why = "it reads image files"
    elif cfg.image_size not in (None, train[0].shape[-1]):
        why = f"data.image_size={cfg.image_size} resizes its {train[0].shape[-1]} px images"
    if why is not None and cfg.on_device is True:
        raise ConfigError(f"data.on_device=true is not allowed for data={cfg.name}: {why}; on-device loading "
                          "serves in-memory data sets at their own size. Use data.on_device=auto or false")
    return why is None


def device_loaders(cfg: DataConfig, src: DataSource, sampler: DistributedSampler, per_rank: int,
                   drop_last: bool, device: torch.device) -> tuple[DeviceLoader, DeviceLoader]:
    """Train loader (the papers' augmentation, batched on the device) and test loader (normalised only)."""
    train_x, train_y = in_memory(src.train)  # type: ignore[misc]
    test_x, test_y = in_memory(src.test)  # type: ignore[misc]
    ra = BatchRandAugment(cfg.randaugment_n, cfg.randaugment_m, tuple(train_x.shape[-2:])) \
        if cfg.randaugment else None
    augment = Augment(cfg.crop_padding, cfg.hflip, ra)
    train = DeviceLoader(src.train, train_x, train_y, per_rank, src.mean, src.std, device, sampler,
                         drop_last=drop_last, augment=augment)
    # Every test image exactly once over all ranks, as the DataLoader path shards it.
    shard = range(sampler.rank, len(test_y), sampler.num_replicas)
    test = DeviceLoader(src.test, test_x, test_y, cfg.test_batch_size, src.mean, src.std, device, shard)
    return train, test
