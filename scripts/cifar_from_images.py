#!/usr/bin/env python3
"""Write CIFAR-10's or CIFAR-100's python release (what ``data=cifar10``/``data=cifar100`` read) from image files.

    python scripts/cifar_from_images.py SOURCE DATA_ROOT [--dataset cifar10|cifar100]
                                        [--expect-sha256 TRAIN TEST] [--reencode QUALITY]
    nfbench train data=cifar10 data.root=DATA_ROOT data.download=false ...

SOURCE is an ImageFolder tree (``train/<class>/*``, ``test/<class>/*``) or its tar.gz, either
possibly under one top folder (``cifar10-lossless/train/...``), of 32x32 images in any format PIL
opens (lossless WebP, PNG, JPEG), each decoded with ``convert("RGB")``. DATA_ROOT receives
``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or
``cifar-100-python/`` (``train``, ``test``, ``meta``): the original release's keys and types
(uint8 ``data`` rows of 3072 = R, G, B planes; label lists; ``filenames``, the source files' own
names; ``batch_label``), pickled with protocol 4. nfbench reads them; torchvision's CIFAR10/CIFAR100
readers read the same keys but first compare every file's md5 with the official release's, so
they refuse any other bytes ("Dataset not found or corrupted"), these included.

Order: classes in sorted order, which is the release's label order for both data sets; within a
class, images in sorted file-name order; stored consecutively in that order (CIFAR-10's five
training batches are consecutive fifths of it). The release's own order within its batches is not
kept by the image trees, so it cannot be rebuilt; this order is the one the data README's pixel
digests are defined on.

Which data set: ``--dataset``, or else the one whose class names the train/ folders carry (the two
name lists share no name). Refused in one line naming the file or folder, exit status 2, before
anything is written: a missing or extra class folder, an empty split, an image that is not 32x32 or
cannot be decoded, pixels whose digest is not ``--expect-sha256``'s. The output folder appears only
complete (written under a temporary name, renamed at the end); an existing one is not replaced.

Why: the in-memory data path serves ``data=cifar10`` at several times the rate of decoding images
in workers, and a machine without network access cannot download the original release.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # nfbench from this checkout, installed or not
from nfbench.data.fingerprint import pixels_sha256  # noqa: E402

PROG = "cifar_from_images"
SPLITS = ("train", "test")
SIZE = 32
PROTOCOL = 4  # any Python 3 reads it; protocol 2 (the release's, from Python 2) stores bytes as latin-1 text

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# CIFAR-100's 20 superclasses and the 5 classes of each: the "Superclass / Classes" table of
# https://www.cs.toronto.edu/~kriz/cifar.html (Krizhevsky, 2009), spelt as the release's
# fine_label_names and coarse_label_names spell them (e.g. "maple_tree" for the page's "maple").
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
COARSE_NAMES = tuple(sorted(CIFAR100_SUPERCLASSES))
CIFAR100_CLASSES = tuple(sorted(c for fine in CIFAR100_SUPERCLASSES.values() for c in fine))
COARSE_OF = {c: COARSE_NAMES.index(s) for s, fine in CIFAR100_SUPERCLASSES.items() for c in fine}
TRAIN_BATCHES = 5  # CIFAR-10's; CIFAR-100 keeps all training images in one file


@dataclass(frozen=True)
class Release:
    """One data set's python release: its name, folder, classes in label order, and its writer."""

    title: str
    folder: str
    classes: tuple[str, ...]
    write: Callable[[Path, dict[str, Split]], list[str]]


class Refusal(Exception):
    """A problem with the input, told in one line that names the file or folder."""


@dataclass
class Tree:
    """SOURCE's images, undecoded: ``images[split][class][file name]`` is a file's bytes."""

    source: Path
    top: tuple[str, ...]  # the one folder that holds train/ and test/, or () when SOURCE does
    images: dict[str, dict[str, dict[str, bytes]]]

    def where(self, *parts: str) -> str:
        """How a message names the file or folder at ``parts`` (split, class, file name) of the tree."""
        inside = Path(*self.top, *parts)
        return str(self.source / inside) if self.source.is_dir() else f"{inside} in {self.source}"


def _files(source: Path) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """(path parts inside SOURCE, bytes) for every file of the folder or tar archive SOURCE."""
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file():
                yield path.relative_to(source).parts, path.read_bytes()
        return
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    yield Path(member.name).parts, f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise Refusal(f"{source}: not a folder and not a readable tar archive ({_one_line(e)})") from e


def read_tree(source: Path) -> Tree:
    """Every image file of SOURCE's train/ and test/ (at its top or under one top folder), undecoded.

    Files beside train/ and test/ (a README, a licence) are not images of the data set and are left out."""
    if not source.exists():
        raise Refusal(f"{source}: no such file or folder")
    files = list(_files(source))
    tops = {parts[0] for parts, _ in files if len(parts) > 1}
    top = () if tops & set(SPLITS) or len(tops) != 1 else tuple(tops)
    tree = Tree(source, top, {split: {} for split in SPLITS})
    for parts, data in files:
        inside = parts[len(top) :]
        if not inside or inside[0] not in SPLITS:
            continue
        if len(inside) != 3:
            raise Refusal(f"{tree.where(*inside)}: not in a class folder ({inside[0]}/<class>/<image>)")
        split, cls, name = inside
        tree.images[split].setdefault(cls, {})[name] = data
    return tree


def choose_release(tree: Tree, name: str | None) -> Release:
    """``--dataset``'s release, or the one whose class names train/'s folders carry (the two share none)."""
    if name is not None:
        return RELEASES[name]
    found = set(tree.images["train"])
    scores = {key: len(found & set(r.classes)) for key, r in RELEASES.items()}
    best = max(scores, key=scores.__getitem__)
    if list(scores.values()).count(scores[best]) > 1:
        raise Refusal(
            f"{tree.where('train')}: its class folders are named as neither CIFAR-10's nor "
            f"CIFAR-100's classes; pass --dataset cifar10 or --dataset cifar100"
        )
    return RELEASES[best]


def check_classes(tree: Tree, release: Release) -> None:
    """Each split holds images of exactly the release's classes."""
    for split in SPLITS:
        classes = tree.images[split]
        if not classes:
            raise Refusal(f"{tree.where(split)}: no images (an empty or missing {split} split)")
        extra = sorted(set(classes) - set(release.classes))
        if extra:
            more = f" (nor are {', '.join(extra[1:])})" if extra[1:] else ""
            raise Refusal(
                f"{tree.where(split, extra[0])}: not one of {release.title}'s {len(release.classes)} classes{more}"
            )
        missing = [c for c in release.classes if c not in classes]
        if missing:
            raise Refusal(
                f"{tree.where(split)}: no folder of images for {release.title} class(es) {', '.join(missing)}"
            )


def decode(data: bytes, where: str, reencode: int | None) -> np.ndarray:
    """A file's RGB pixels (32, 32, 3), optionally after one more JPEG round trip at ``reencode``."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
            rgb = img.convert("RGB")
    except Exception as e:  # PIL raises several types for a damaged or foreign file; each is this refusal
        raise Refusal(f"{where}: cannot be decoded as an image ({_one_line(e)})") from e
    if size != (SIZE, SIZE):
        raise Refusal(f"{where}: {size[0]}x{size[1]} pixels, not a {SIZE}x{SIZE} CIFAR image")
    if reencode is not None:
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=reencode, subsampling=2)  # 2 = 4:2:0 chroma
        with Image.open(buf) as again:
            rgb = again.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8)


@dataclass
class Split:
    """One split's decoded images in stored order: (N, 3, 32, 32) uint8, labels, file names."""

    images: np.ndarray
    labels: list[int]
    filenames: list[str]


class Ticker:
    """A line to stderr every few seconds while images decode: 60,000 of them take a while."""

    def __init__(self, total: int, every_s: float = 5.0) -> None:
        self.total, self.every_s, self.done = total, every_s, 0
        self.start = self.last = time.monotonic()

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            print(
                f"{PROG}: decoded {self.done:,} of {self.total:,} images ({now - self.start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )


def decode_tree(tree: Tree, release: Release, reencode: int | None) -> dict[str, Split]:
    """Every image decoded, classes in label order and file names sorted within each class."""
    ticker = Ticker(sum(len(files) for classes in tree.images.values() for files in classes.values()))
    splits = {}
    for split in SPLITS:
        pixels, labels, names = [], [], []
        for label, cls in enumerate(release.classes):
            files = tree.images[split][cls]
            for name in sorted(files):
                pixels.append(decode(files[name], tree.where(split, cls, name), reencode))
                labels.append(label)
                names.append(name)
                ticker.step()
        # A CHW view of the HWC stack: the digest hashes the HWC storage without a copy.
        splits[split] = Split(np.stack(pixels).transpose(0, 3, 1, 2), labels, names)
    return splits


def _rows(images: np.ndarray) -> np.ndarray:
    """CIFAR's rows: 3072 bytes per image, the R plane (row by row), then G, then B."""
    return np.ascontiguousarray(images).reshape(len(images), -1)


def _dump(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=PROTOCOL)


def write_cifar10(folder: Path, splits: dict[str, Split]) -> list[str]:
    """data_batch_1..5 (consecutive fifths of the training images), test_batch, batches.meta."""
    train, test = splits["train"], splits["test"]
    edges = [len(train.labels) * i // TRAIN_BATCHES for i in range(TRAIN_BATCHES + 1)]
    for i, (lo, hi) in enumerate(zip(edges, edges[1:]), start=1):
        _dump(
            folder / f"data_batch_{i}",
            {
                "batch_label": f"training batch {i} of {TRAIN_BATCHES}",
                "labels": train.labels[lo:hi],
                "data": _rows(train.images[lo:hi]),
                "filenames": train.filenames[lo:hi],
            },
        )
    _dump(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": test.labels,
            "data": _rows(test.images),
            "filenames": test.filenames,
        },
    )
    _dump(
        folder / "batches.meta",
        {"num_cases_per_batch": edges[1], "label_names": list(CIFAR10_CLASSES), "num_vis": 3 * SIZE * SIZE},
    )
    return [f"data_batch_{i}" for i in range(1, TRAIN_BATCHES + 1)] + ["test_batch", "batches.meta"]


def write_cifar100(folder: Path, splits: dict[str, Split]) -> list[str]:
    """train, test (fine and coarse labels), meta (both name lists)."""
    for split, what in (("train", "training"), ("test", "testing")):
        s = splits[split]
        _dump(
            folder / split,
            {
                "filenames": s.filenames,
                "batch_label": f"{what} batch 1 of 1",
                "fine_labels": s.labels,
                "coarse_labels": [COARSE_OF[CIFAR100_CLASSES[y]] for y in s.labels],
                "data": _rows(s.images),
            },
        )
    _dump(folder / "meta", {"fine_label_names": list(CIFAR100_CLASSES), "coarse_label_names": list(COARSE_NAMES)})
    return ["train", "test", "meta"]


RELEASES = {
    "cifar10": Release("CIFAR-10", "cifar-10-batches-py", CIFAR10_CLASSES, write_cifar10),
    "cifar100": Release("CIFAR-100", "cifar-100-python", CIFAR100_CLASSES, write_cifar100),
}


def write_release(data_root: Path, release: Release, splits: dict[str, Split]) -> tuple[Path, list[str]]:
    """The release's folder under DATA_ROOT, written under a temporary name and renamed when complete."""
    out = data_root / release.folder
    partial = data_root / f".{release.folder}.partial-{os.getpid()}"
    data_root.mkdir(parents=True, exist_ok=True)
    partial.mkdir()
    try:
        written = release.write(partial, splits)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out, written


def convert(
    source: Path,
    data_root: Path,
    dataset: str | None = None,
    reencode: int | None = None,
    expect_sha256: tuple[str, str] | None = None,
) -> dict:
    """Check, decode and write SOURCE as DATA_ROOT's python release; raise Refusal on any problem.

    Returns what was written: the folder, its files, images per split and their pixel digests."""
    tree = read_tree(source)
    release = choose_release(tree, dataset)
    out = data_root / release.folder
    if out.exists():
        raise Refusal(f"{out}: already exists; delete it, or choose another DATA_ROOT")
    check_classes(tree, release)
    splits = decode_tree(tree, release, reencode)
    digests = {split: pixels_sha256(s.images) for split, s in splits.items()}
    if expect_sha256 is not None and (digests["train"], digests["test"]) != tuple(expect_sha256):
        raise Refusal(
            f"pixel sha256 mismatch: expected train {expect_sha256[0]} test {expect_sha256[1]}, "
            f"got train {digests['train']} test {digests['test']}"
        )
    folder, files = write_release(data_root, release, splits)
    return {
        "folder": folder,
        "files": files,
        "dataset": release.title,
        "images": {split: len(s.labels) for split, s in splits.items()},
        "sha256": digests,
    }


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def _sha256(text: str) -> str:
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text.lower()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a sha256 (64 hex digits)")
    return text.lower()


def _quality(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 95:
        raise argparse.ArgumentTypeError(f"QUALITY is a JPEG quality from 1 to 95 (PIL's useful range), not {text!r}")
    return int(text)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="an ImageFolder tree train/<class>/*, test/<class>/* or its tar.gz")
    parser.add_argument("data_root", type=Path, help="where cifar-10-batches-py/ or cifar-100-python/ is written")
    parser.add_argument(
        "--dataset",
        choices=sorted(RELEASES),
        help="the release to write (default: the one whose class names train/'s folders carry)",
    )
    parser.add_argument(
        "--expect-sha256",
        nargs=2,
        type=_sha256,
        metavar=("TRAIN", "TEST"),
        help="refuse unless the stored pixels have these digests (nfbench.data.fingerprint; the data "
        "README gives the original CIFAR-10's)",
    )
    parser.add_argument(
        "--reencode",
        type=_quality,
        metavar="QUALITY",
        help="pass every image once more through JPEG at this quality (1-95), 4:2:0 chroma: at 75, "
        "from the original pixels, it rebuilds the data README's 'JPEG copy' (to within 0.5 "
        "grey levels)",
    )
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        done = convert(args.source, args.data_root, args.dataset, args.reencode, args.expect_sha256)
    except Refusal as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(2)
    images = done["images"]
    print(
        f"wrote {done['dataset']}, {images['train']:,} train / {images['test']:,} test images, to {done['folder']} "
        f"({', '.join(done['files'])}) in {time.monotonic() - start:.1f} s"
    )
    print(f"pixel sha256: train {done['sha256']['train']} test {done['sha256']['test']}")


if __name__ == "__main__":
    main(sys.argv[1:])
