#!/usr/bin/env python3
"""Write CIFAR-10's python release (what ``data=cifar10`` reads) from the CIFAR-10 JPEGs.

    python scripts/cifar10_from_jpeg.py SOURCE DATA_ROOT [--reencode QUALITY]
    nfbench train data=cifar10 data.root=DATA_ROOT data.download=false ...

SOURCE is ``cifar10-jpeg.tar.gz`` or its unpacked ImageFolder tree (``train/<class>/*.jpg``,
``test/<class>/*.jpg``); DATA_ROOT receives ``cifar-10-batches-py/`` with ``data_batch_1..5``,
``test_batch`` and ``batches.meta`` in torchvision's layout. Classes are numbered in sorted order,
which is CIFAR-10's own label order (airplane, automobile, ..., truck); images keep the order of
their file names within a class, and the five training batches split them evenly.

Why: the in-memory data path (the whole set on the GPU, augmented there in batches) serves
``data=cifar10`` at several times the rate of decoding JPEGs in workers, and a machine without
network access cannot download the original release. The pixels are the JPEG decodes, not the
original release's: accuracies are close to, not identical with, published CIFAR-10 numbers.

``--reencode QUALITY`` passes every decoded image once more through JPEG at that quality (4:2:0
chroma, as the source files are): a dose-response check of how much the compression itself costs
a network trained on these images (docs/results-cifar10-gpu.md).
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

SPLITS = ("train", "test")
TRAIN_BATCHES = 5


def _members(source: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, file name, JPEG bytes) for every image under SOURCE."""
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            parts = path.relative_to(source).parts
            if path.is_file() and len(parts) >= 3 and parts[-3] in SPLITS:
                yield parts[-3], parts[-2], parts[-1], path.read_bytes()
        return
    with tarfile.open(source, "r:*") as tar:
        for m in tar:
            parts = Path(m.name).parts
            if m.isfile() and len(parts) >= 3 and parts[-3] in SPLITS:
                f = tar.extractfile(m)
                assert f is not None
                yield parts[-3], parts[-2], parts[-1], f.read()


def _decode(data: bytes, reencode: int | None) -> np.ndarray:
    """The RGB pixels of a JPEG, optionally after one more JPEG round trip at quality ``reencode``."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    if reencode is not None:
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=reencode, subsampling="4:2:0")
        with Image.open(buf) as again:
            rgb = again.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8)


def convert(source: Path, data_root: Path, reencode: int | None = None) -> dict[str, int]:
    """Decode every image and write the pickle batches; return the image count per split."""
    images: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {s: {} for s in SPLITS}
    for split, cls, name, data in _members(source):
        rgb = _decode(data, reencode)
        if rgb.shape != (32, 32, 3):
            raise ValueError(f"{split}/{cls}/{name} is {rgb.shape[1]}x{rgb.shape[0]}, not a 32x32 CIFAR image")
        images[split].setdefault(cls, []).append((name, rgb))
    classes = sorted(images["train"])
    if not classes or sorted(images["test"]) != classes:
        raise ValueError(f"{source}: train/ and test/ must hold the same class folders "
                         f"(found {classes} and {sorted(images['test'])})")
    out = data_root / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        rows = [(label, rgb) for label, cls in enumerate(classes) for _, rgb in sorted(images[split][cls],
                                                                                    key=lambda t: t[0])]
        counts[split] = len(rows)
        pixels = np.stack([rgb.transpose(2, 0, 1).reshape(-1) for _, rgb in rows])  # CIFAR: R plane, G, B
        labels = [label for label, _ in rows]
        if split == "test":
            _dump(out / "test_batch", pixels, labels, "testing batch 1 of 1")
            continue
        # A fixed interleaving so each training batch holds every class, as in the original release.
        order = np.random.default_rng(0).permutation(len(rows))
        for i, part in enumerate(np.array_split(order, TRAIN_BATCHES)):
            _dump(out / f"data_batch_{i + 1}", pixels[part], [labels[j] for j in part],
                  f"training batch {i + 1} of {TRAIN_BATCHES}")
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes, "num_cases_per_batch": counts["test"], "num_vis": 3072}, f)
    return counts


def _dump(path: Path, pixels: np.ndarray, labels: list[int], what: str) -> None:
    with open(path, "wb") as f:
        pickle.dump({"batch_label": what, "labels": labels, "data": pixels, "filenames": []}, f)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="cifar10-jpeg.tar.gz or its unpacked train/ test/ tree")
    parser.add_argument("data_root", type=Path, help="where cifar-10-batches-py/ is written")
    parser.add_argument("--reencode", type=int, metavar="QUALITY", choices=range(1, 96),
                        help="one more JPEG round trip at this quality (1-95), 4:2:0 chroma")
    args = parser.parse_args(argv)
    counts = convert(args.source, args.data_root, args.reencode)
    print(f"wrote {counts['train']} train / {counts['test']} test images to {args.data_root / 'cifar-10-batches-py'}")


if __name__ == "__main__":
    main(sys.argv[1:])
