"""Data pipeline images/s against the model's own images/s, on the same machine and batch.

Pipelines, all on CIFAR-10-shaped data (random pixels, nfbench's ``data=cifar10`` path), each
delivering normalised float batches on the training device:

- device: crop + flip, batched on the device (``data.on_device=true``, the default for CIFAR);
- device + RandAugment as whole-batch tensor ops, every sample its own ops (``data.num_workers=0``);
- the same, captured in a CUDA graph and replayed (what ``trainer.cuda_graph=true`` trains with; eager on a CPU);
- device + RandAugment, torchvision's RandAugment called on each image in turn (the alternative);
- workers + RandAugment: the same batches built on the CPU in ``--workers`` processes from the
  plan the training process draws (``data.num_workers=N``);
- workers, per sample: the DataLoader path, torchvision's per-sample transforms in ``--workers``
  processes (pinned memory, persistent workers), with and without RandAugment.

With ``--data imagefolder --root DIR`` (e.g. the CIFAR-10 JPEGs), an image folder instead, crop + flip:
read from its files in DataLoader workers (``data.on_device=false``) against decoded once into memory
and served by the device loader (``data.on_device=auto``).

The model's rate is forward + backward + SGD step on one batch already on the device. A pipeline
keeps up when its ratio to the model is >= 1; the GPU target is >= 2 for ResNet-18. On a CPU the
pipeline and the model share the same cores, so there the model's share of a step is
model time / (model time + pipeline time), printed as well.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
from common import (
    amp_context,
    base_parser,
    compose,
    device_of,
    footer,
    header,
    median,
    model_of,
    timed,
    write_fake_cifar10,
)
from torch.nn import functional as F

from nfbench.data.augment import BatchRandAugment
from nfbench.data.device import DeviceLoader
from nfbench.data.loaders import build_loaders
from nfbench.data.source import build_source
from nfbench.engine.optim import build_optimizer
from nfbench.models import build_model
from nfbench.schemes import build_scheme


class PerSampleRandAugment(BatchRandAugment):
    """The obvious alternative on the device: torchvision's RandAugment on each image in turn."""

    def __init__(self, num_ops: int, magnitude: int, image_size: tuple[int, int]) -> None:
        from torchvision.transforms import v2

        super().__init__(num_ops, magnitude, image_size)
        self.per_image = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)

    def __call__(self, x, ops, signs):  # this variant draws its own ops
        return torch.stack([self.per_image(img) for img in x])


def pipeline_rate(loader, device: torch.device, batches: int, warmup: int = 0) -> float:
    """Images/s delivered on the device, after ``warmup`` batches (for the workers to start)."""
    loader.sampler.set_epoch(0)
    torch.manual_seed(0)
    it = iter(loader)
    for x, _ in itertools.islice(it, warmup):
        x.to(device, non_blocking=True)
    n = 0

    def run() -> None:
        nonlocal n
        for x, y in itertools.islice(it, batches):
            x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            n += len(y)

    seconds = timed(run, device)
    return n / seconds


def model_rate(cfg, device: torch.device, precision: str, channels_last: bool, steps: int = 10) -> float:
    """Images/s of forward + backward + step on a batch that is already on the device."""
    net = build_model(cfg.model, build_scheme(cfg.init), 10, 3, 32).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    opt = build_optimizer(net, cfg.optim, device)
    x = torch.randn(cfg.data.batch_size, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (cfg.data.batch_size,), device=device)

    def step() -> None:
        with amp_context(device, precision):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    return median([steps * len(y) / timed(lambda: [step() for _ in range(steps)], device) for _ in range(3)])


def cifar_rows(
    device: torch.device, batches: int, workers: int, base: list[str], root: Path
) -> list[tuple[str, float]]:
    """Every pipeline on random CIFAR-10-shaped pixels in the python release (``data=cifar10``)."""
    cuda = device.type == "cuda"
    base = ["data=cifar10", f"data.root={root}", "data.download=false", *base]
    rows: list[tuple[str, float]] = []

    def loader(*overrides: str, capture: bool = False):
        cfg = compose([*base, *overrides])
        return build_loaders(cfg.data, build_source(cfg.data), seed=0, pin_memory=cuda, device=device, capture=capture)[
            0
        ]

    on_device = ["data.on_device=true", "data.num_workers=0"]
    rows.append(("device: crop+flip", pipeline_rate(loader(*on_device), device, batches)))
    whole = loader(*on_device, "data.randaugment=true")
    rows.append(("device: crop+flip+RandAugment, whole-batch ops", pipeline_rate(whole, device, batches)))
    captured = loader(*on_device, "data.randaugment=true", capture=True)
    rows.append(
        (
            "device: crop+flip+RandAugment, captured in a CUDA graph"
            if cuda
            else "device: crop+flip+RandAugment, captured path (eager: no CUDA)",
            pipeline_rate(captured, device, batches),
        )
    )
    per_sample: DeviceLoader = loader(*on_device, "data.randaugment=true")
    ra = whole.augment.randaugment
    per_sample.augment.randaugment = PerSampleRandAugment(ra.num_ops, ra.magnitude, (32, 32))
    rows.append(("device: crop+flip+RandAugment, per sample", pipeline_rate(per_sample, device, batches)))
    in_workers = loader("data.on_device=true", "data.randaugment=true", f"data.num_workers={workers}")
    rows.append(
        (
            f"{workers} workers: crop+flip+RandAugment, whole-batch ops",
            pipeline_rate(in_workers, device, batches, warmup=2 * workers),
        )
    )
    del in_workers
    for ra_on in ("false", "true"):
        dl = loader("data.on_device=false", f"data.num_workers={workers}", f"data.randaugment={ra_on}")
        name = f"{workers} workers: crop+flip{'+RandAugment' if ra_on == 'true' else ''}, per sample"
        rows.append((name, pipeline_rate(dl, device, batches, warmup=2 * workers)))
        del dl
    return rows


def folder_rows(
    a, device: torch.device, batches: int, workers: Optional[int], base: list[str]
) -> list[tuple[str, float]]:
    """An image folder (``data=imagefolder data.root=--root``), crop + flip: read from its files in the
    folder's DataLoader workers (``data.on_device=false``; data.num_workers=2 unless --workers), against
    decoded once into memory and served by the device loader (``data.on_device=auto``). The one-off
    cost of each (file check, normalisation sample, decoding) is printed beside."""
    cuda = device.type == "cuda"
    base = [
        "data=imagefolder",
        f"data.root={a.root}",
        *base,
        *([f"data.num_workers={workers}"] if workers is not None else []),
    ]
    rows: list[tuple[str, float]] = []
    for on_device in ("false", "auto"):
        cfg = compose([*base, f"data.on_device={on_device}"])
        start = time.perf_counter()
        src = build_source(cfg.data)
        dl = build_loaders(cfg.data, src, seed=0, pin_memory=cuda, device=device)[0]
        setup = time.perf_counter() - start
        kind = (
            "held in memory, device loader"
            if isinstance(dl, DeviceLoader)
            else f"files, {cfg.data.num_workers} DataLoader workers"
        )
        warmup = 0 if isinstance(dl, DeviceLoader) else 2 * cfg.data.num_workers
        rate = pipeline_rate(dl, device, batches, warmup=warmup)
        rows.append((f"on_device={on_device}: {kind}, crop+flip (setup {setup:.1f} s)", rate))
        del dl
    return rows


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=None, help="timed per pipeline; default 100 on CUDA, 12 on CPU")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers; default min(8, cores), for --data imagefolder the folder's own (2)",
    )
    p.add_argument(
        "--data",
        choices=["cifar10", "imagefolder"],
        default="cifar10",
        help="cifar10: every pipeline on random pixels; imagefolder: files against memory, on --root",
    )
    p.add_argument("--root", default=None, help="--data imagefolder: ROOT/train/<class>/*, ROOT/test/<class>/*")
    a = p.parse_args()
    if a.data == "imagefolder" and a.root is None:
        p.error("--data imagefolder needs --root DIR")
    device = device_of(a)
    cuda = device.type == "cuda"
    model, width = model_of(a, device)
    batches = a.batches or (100 if cuda else 12)
    workers = a.workers if a.workers is not None or a.data == "imagefolder" else min(8, os.cpu_count() or 1)
    header(
        f"data pipeline vs model: {model} (width {width or 'published'}), batch {a.batch}, {a.precision}, "
        f"channels_last={a.channels_last}; data {a.data}, {workers or 'default'} DataLoader workers",
        device,
    )
    torch.backends.cudnn.benchmark = True
    base = [f"data.batch_size={a.batch}", f"model={model}", f"model.width={width or 'null'}"]
    m = model_rate(compose(base), device, a.precision, a.channels_last)
    if a.data == "imagefolder":
        rows = folder_rows(a, device, batches, a.workers, base)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            root = write_fake_cifar10(Path(tmp), (batches + 2 * workers + 2) * a.batch, n_test=a.batch)
            rows = cifar_rows(device, batches, workers, base, root)
    print(f"{'model forward+backward+step':70s} {m:10.1f} img/s")
    for name, rate in rows:
        share = f"; model's share of a step {rate / (rate + m):.2f}" if not cuda else ""
        print(f"{name:70s} {rate:10.1f} img/s  pipeline/model {rate / m:6.2f}{share}")
    footer()


if __name__ == "__main__":
    main()
