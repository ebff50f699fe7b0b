"""In-memory data sets served from the training device, augmented a batch at a time there.

CIFAR-sized data (CIFAR, or a small image folder decoded once by
nfbench/data/folders.py) fits in GPU memory as uint8 (150 MB for CIFAR-10), so the
training loop needs no host-to-device copies: each batch is gathered, cropped,
flipped and normalised on the device in a handful of kernels, with the same
recipe as :func:`nfbench.data.transforms`.  RandAugment is whole-batch tensor ops
(:mod:`nfbench.data.augment`: every sample its own ops, bit for bit torchvision's), applied on
the device, or, with ``data.num_workers`` > 0, in worker processes on the CPU so that its many
small kernels do not compete with the model's for the training process's time.  With the step
captured (``trainer.cuda_graph`` on CUDA) a batch is built on the device in a CUDA graph of its
own (:class:`CapturedBuilder`), workers or not.

:class:`DeviceLoader` is a drop-in for the training ``DataLoader``: it reads its
order from the same ``DistributedSampler`` (so ``sampler.set_epoch`` and the
rank shards behave exactly as before), and every random draw of an epoch comes
from a generator seeded once from torch's global RNG when iteration starts,
which ``train()`` reseeds per (seed, epoch, rank): resuming is exact, and the
augmentation is the same on CPU and CUDA and with or without workers.  All draws
are made on the CPU and copied to the device once per epoch, so the hot loop
never waits on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from nfbench.config import DataConfig
from nfbench.data.augment import BatchRandAugment
from nfbench.data.sets import DataSource, held_images
from nfbench.data.source import worker_context
from nfbench.errors import ConfigError


def in_memory(ds: Dataset) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The (uint8 images, labels) behind a data set built by ``build_source``, or None if it reads files."""
    held, indices = held_images(ds)
    if held is None:
        return None
    if indices is None:
        return held.images, held.labels
    return held.images[indices], held.labels[indices]


@dataclass
class Augment:
    """The training recipe of small images: random crop with zero padding, flip, RandAugment."""

    padding: int
    hflip: bool
    randaugment: Optional[BatchRandAugment] = None


@dataclass
class BatchPlan:
    """Every random draw behind one batch, on the host or the device that builds it: tensors of fixed
    shapes, so that building a batch from them can be captured in a CUDA graph (:class:`CapturedBuilder`)."""

    index: torch.Tensor  # (b,) sample indices
    offset: torch.Tensor  # (b,) crop corner in the flattened padded image: top * padded_width + left
    flip: torch.Tensor  # (b,) 1 where the image is mirrored, int64 (it indexes the gather table)
    ra_ops: Optional[torch.Tensor]  # (b, num_ops) RandAugment's ops (nfbench/data/augment.py), or None
    ra_signs: Optional[torch.Tensor]  # (b, num_ops) their signs

    def tensors(self) -> list[Optional[torch.Tensor]]:
        return [self.index, self.offset, self.flip, self.ra_ops, self.ra_signs]

    def mapped(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> BatchPlan:
        """A plan of ``fn`` of each tensor (a None stays None)."""
        ops, signs = (None if t is None else fn(t) for t in (self.ra_ops, self.ra_signs))
        return BatchPlan(fn(self.index), fn(self.offset), fn(self.flip), ops, signs)


@dataclass
class EpochPlan(BatchPlan):
    """The draws of a whole epoch; sliced into one :class:`BatchPlan` per batch."""

    def to(self, device: torch.device) -> "EpochPlan":
        return EpochPlan(**vars(self.mapped(lambda t: t.to(device))))

    def share_memory_(self) -> "EpochPlan":
        for t in self.tensors():
            if t is not None:
                t.share_memory_()
        return self

    def copy_(self, other: "EpochPlan") -> None:
        for mine, theirs in zip(self.tensors(), other.tensors()):
            if mine is not None and theirs is not None:
                mine.copy_(theirs)

    def batch(self, start: int, stop: int) -> BatchPlan:
        return self.mapped(lambda t: t[start:stop])

    def spans(self, batch_size: int) -> list[tuple[int, int]]:
        """(start, stop) of each batch."""
        n = len(self.index)
        return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


class BatchBuilder:
    """Builds the uint8 batch of a :class:`BatchPlan` from images held wherever this builder lives.

    Crop and flip are one gather over the flattened zero-padded images (padded once, here), with
    per-sample offsets into a table of the two pixel orders (straight, mirrored): the same pixels as
    ``v2.RandomCrop(size, padding)`` then ``v2.RandomHorizontalFlip()``, in three kernels per batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: Optional[Augment]) -> None:
        self.size = tuple(images.shape[-2:])
        self.augment = augment
        pad = augment.padding if augment is not None else 0
        self.images = F.pad(images, (pad, pad, pad, pad)) if pad else images
        self.labels = labels
        self.crops = augment is not None and (pad > 0 or augment.hflip)
        h, w = self.size
        rows = torch.arange(h, device=images.device)[:, None] * (w + 2 * pad)
        cols = torch.arange(w, device=images.device)
        self.table = torch.stack([(rows + cols).flatten(), (rows + (w - 1 - cols)).flatten()])

    @property
    def padded_width(self) -> int:
        return self.images.shape[-1]

    def __call__(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images.index_select(0, plan.index)
        if self.crops:
            b, c = x.shape[:2]
            flat = self.table.index_select(0, plan.flip).add_(plan.offset[:, None])
            x = torch.gather(x.view(b, c, -1), 2, flat[:, None, :].expand(b, c, flat.shape[1])).view(b, c, *self.size)
        ra = self.augment.randaugment if self.augment is not None else None
        if ra is not None:  # whole-batch ops, every sample its own (no host round trip)
            assert plan.ra_ops is not None and plan.ra_signs is not None  # drawn whenever RandAugment is on
            x = ra(x, plan.ra_ops, plan.ra_signs)
        return x, self.labels.index_select(0, plan.index)


class _PlannedBatches(Dataset):
    """For worker processes: item (start, stop) is that batch of the epoch plan, which the training
    process writes into shared memory before each epoch (persistent workers keep it)."""

    def __init__(self, builder: BatchBuilder, plan: EpochPlan) -> None:
        self.builder, self.plan = builder, plan

    def __getitem__(self, span: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.builder(self.plan.batch(*span))


class _Spans:
    """The sampler of the worker DataLoader: this epoch's batch spans, set before each epoch."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self.spans)


class CapturedBuilder:
    """Building a training batch on the device (gather, crop, flip, RandAugment, normalise) captured once in a
    CUDA graph and replayed per batch, before the step's own graph (``trainer.cuda_graph``).

    RandAugment's whole-batch ops are a few hundred small kernels, as many as a CIFAR network's step: replayed,
    they cost one launch.  The batch's draws are copied into static plan buffers (device to device), the graph
    writes the static batch ``(x, y)``, which the step reads before the next replay overwrites it (one stream).
    A batch of another size (the ragged last one) is built eagerly; without capture (``capture=False``, on a
    CPU) every batch is, through the same function: that is how the CPU tests check it.
    """

    def __init__(
        self,
        build: Callable[[BatchPlan], tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
        capture: Optional[bool] = None,
    ) -> None:
        self.build, self.device = build, device
        self.capture = device.type == "cuda" if capture is None else capture
        self.static: Optional[BatchPlan] = None
        self.out: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.graph: Optional[torch.cuda.CUDAGraph] = None

    def __call__(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.capture:
            return self.build(plan)
        if self.static is None:
            self.static = plan.mapped(torch.clone)
        if plan.index.shape != self.static.index.shape:
            return self.build(plan)
        for mine, theirs in zip(self.static.tensors(), plan.tensors()):
            if mine is not None and theirs is not None:
                mine.copy_(theirs, non_blocking=True)
        if self.graph is None:
            self._capture()
        self.graph.replay()  # type: ignore[union-attr]
        return self.out  # type: ignore[return-value]

    def _capture(self) -> None:
        """One eager build on a side stream (it makes RandAugment's tables and cuDNN's state), then the capture."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self.build(self.static)  # type: ignore[arg-type]
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"):
            self.out = self.build(self.static)  # type: ignore[arg-type]


class DeviceLoader:
    """Batches (x, y) of in-memory uint8 images: normalised float32 x and int64 y on ``device``.

    ``mean`` and ``std`` normalise (x / 255 - mean) / std: per channel, or ``mean`` a (C, H, W) mean image
    (``data.pixel_mean``, He et al. 2016a; std 1), subtracted after the crop and flip, so in the crop's
    coordinates, as :func:`nfbench.data.transforms` does.
    Iterates in the order of ``sampler`` (a ``DistributedSampler`` for training, so
    ``loader.sampler.set_epoch`` and the rank shards work as with a ``DataLoader``; this rank's
    indices for testing), ``batch_size`` samples at a time, dropping a ragged last batch when
    ``drop_last``. Batches are built on ``device`` itself, or, with ``num_workers`` > 0 and
    RandAugment on, in worker processes on the CPU (RandAugment's many small kernels then leave
    the training process alone; ``benchmarks/data_pipeline.py`` measures both). Either way the
    draws come from the same plan, so the batches are the same.
    """

    def __init__(
        self,
        dataset: Dataset,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float] | torch.Tensor,
        std: Sequence[float],
        device: torch.device,
        sampler: Sampler | Sequence[int],
        drop_last: bool = False,
        augment: Optional[Augment] = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        capture: bool = False,
    ) -> None:
        self.dataset, self.sampler, self.batch_size, self.drop_last = dataset, sampler, batch_size, drop_last
        self.device, self.augment = device, augment
        # With the step captured, RandAugment is built on the device in a graph of its own; else, with
        # workers, in them (its many small kernels then leave the training process alone).
        in_workers = num_workers > 0 and augment is not None and augment.randaugment is not None and not capture
        home = torch.device("cpu") if in_workers else device
        self.builder = BatchBuilder(images.to(home), labels.to(home), augment)
        self._workers: Optional[DataLoader] = None
        if in_workers:
            self._shared = self._blank_plan().share_memory_()
            self._spans = _Spans()
            self._workers = DataLoader(
                _PlannedBatches(self.builder, self._shared),
                batch_size=None,
                sampler=self._spans,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=True,
                multiprocessing_context=worker_context(),
            )
        # (v/255 - mean) / std as one multiply-add per pixel, straight from uint8.
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        mean_t = mean_t.view(-1, 1, 1) if mean_t.ndim == 1 else mean_t
        self._scale = (1.0 / (255.0 * std_t)).unsqueeze(0).to(device)
        self._shift = (-mean_t / std_t).unsqueeze(0).to(device)

        self.captured = CapturedBuilder(self._build, device) if capture and not in_workers else None

    def _build(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.builder(plan)
        return self.normalise(x), y

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._shift, x, self._scale)

    def _samples(self) -> int:
        return len(self) * self.batch_size if self.drop_last else len(self.sampler)  # type: ignore[arg-type]

    def _blank_plan(self) -> EpochPlan:
        """Zeros in the shapes of :meth:`plan`'s tensors (RandAugment on)."""
        n, layers = self._samples(), self.augment.randaugment.num_ops  # type: ignore[union-attr]
        index, offset, flip = (torch.zeros(n, dtype=torch.int64) for _ in range(3))
        return EpochPlan(
            index, offset, flip, torch.zeros(n, layers, dtype=torch.int64), torch.zeros(n, layers, dtype=torch.int64)
        )

    def plan(self) -> EpochPlan:
        """Draw the epoch: order from the sampler, augmentation from a generator seeded by torch's RNG."""
        n = self._samples()
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.int64)[:n]
        aug = self.augment
        offset = torch.zeros(n, dtype=torch.int64)
        flip = torch.zeros(n, dtype=torch.int64)
        ops = signs = None
        if aug is not None:
            # One draw from the global RNG seeds the whole epoch (see the module docstring).
            gen = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
            top = torch.randint(2 * aug.padding + 1, (n,), generator=gen)
            left = torch.randint(2 * aug.padding + 1, (n,), generator=gen)
            offset = top * self.builder.padded_width + left
            if aug.hflip:
                flip = (torch.rand(n, generator=gen) < 0.5).long()
            if aug.randaugment is not None:
                ops, signs = aug.randaugment.draw(n, gen)
        return EpochPlan(order, offset, flip, ops, signs)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.plan()
        if self._workers is None:
            epoch = epoch.to(self.device)
            build = self.captured or self._build
            for span in epoch.spans(self.batch_size):
                yield build(epoch.batch(*span))
            return
        # The workers take this epoch's spans only once the new iterator has reset them (what an
        # abandoned iterator left in flight is dropped), so the shared plan can be overwritten now.
        self._shared.copy_(epoch)
        self._spans.spans = epoch.spans(self.batch_size)
        for x, y in self._workers:
            yield self.normalise(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)


def use_device_loader(cfg: DataConfig, src: DataSource) -> bool:
    """``data.on_device``: true, false, or auto (whenever every split is held in memory and
    trained at their native size; the DataLoader path serves image folders read from their files,
    such as ImageNet's, and resizing). Small image folders are held in memory by nfbench/data/folders.py."""
    if cfg.on_device is False:
        return False
    # Which splits are held, judged without gathering their images (this runs for every loader built).
    held = [held_images(split)[0] for split in (src.train, src.test, *([] if src.val is None else [src.val]))]
    why = None
    if any(split is None for split in held) or src.recipe != "small":
        why = "it reads image files"
    elif cfg.image_size not in (None, held[0].images.shape[-1]):  # type: ignore[union-attr]
        side = held[0].images.shape[-1]  # type: ignore[union-attr]
        why = f"data.image_size={cfg.image_size} resizes its {side} px images"
    if why is not None and cfg.on_device is True:
        raise ConfigError(
            f"data.on_device=true is not allowed for data={cfg.name}: {why}; on-device loading "
            "serves in-memory data sets at their own size. Use data.on_device=auto or false"
        )
    return why is None


def normalisation(src: DataSource) -> tuple[Sequence[float] | torch.Tensor, Sequence[float]]:
    """The (mean, std) a :class:`DeviceLoader` normalises ``src``'s images with: the mean image and std 1
    with ``data.pixel_mean`` (``src.mean_image``), else the per-channel mean and std."""
    if src.mean_image is not None:
        return src.mean_image, [1.0] * src.in_chans
    return src.mean, src.std


def device_train_loader(
    cfg: DataConfig,
    src: DataSource,
    sampler: DistributedSampler,
    per_rank: int,
    drop_last: bool,
    device: torch.device,
    pin_memory: bool = False,
    capture: bool = False,
) -> DeviceLoader:
    """The training loader: the papers' augmentation, batched. ``data.num_workers`` processes build
    RandAugment's batches when it is on, unless ``capture`` (``trainer.cuda_graph`` on CUDA): then every batch
    is built on the device in a CUDA graph of its own (see :class:`DeviceLoader`, :class:`CapturedBuilder`)."""
    train_x, train_y = in_memory(src.train)  # type: ignore[misc]
    ra = (
        BatchRandAugment(cfg.randaugment_n, cfg.randaugment_m, tuple(train_x.shape[-2:]))
        if cfg.randaugment and cfg.randaugment_n > 0
        else None
    )
    augment = Augment(cfg.crop_padding, cfg.hflip, ra)
    return DeviceLoader(
        src.train,
        train_x,
        train_y,
        per_rank,
        *normalisation(src),
        device,
        sampler,
        drop_last=drop_last,
        augment=augment,
        num_workers=cfg.num_workers,
        pin_memory=pin_memory,
        capture=capture,
    )


def device_eval_loader(
    cfg: DataConfig, src: DataSource, ds: Dataset, shard: Sequence[int], device: torch.device
) -> DeviceLoader:
    """A test or validation loader (normalised only) over this rank's ``shard`` of ``ds``'s images."""
    x, y = in_memory(ds)  # type: ignore[misc]
    return DeviceLoader(ds, x, y, cfg.test_batch_size, *normalisation(src), device, shard)
