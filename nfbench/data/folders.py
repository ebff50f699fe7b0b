"""Image folders: reading a tree, the one class check of its splits, the up-front check of every
file, and decoding a small folder once into memory.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import datasets as tvd
from torchvision.datasets import ImageFolder

from nfbench.config import DataConfig
from nfbench.errors import ConfigError, DataError, DataNotFoundError

log = logging.getLogger("nfbench")


FOLDER_LAYOUT = "expected ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg (or val/)"


def data_not_found(what: str, where: Path, why: str, downloadable: bool = True) -> DataNotFoundError:
    """Where a data set was looked for and the fixes; ``data.download`` only where it can fetch the files."""
    download = ", or run once with data.download=true on a machine with internet access" if downloadable else ""
    return DataNotFoundError(
        f"{what} not found in {where} ({why}). Fix: put the files there, or point data.root "
        f"(or the NFBENCH_DATA environment variable) at the folder that holds them{download}."
    )


def split_folder(root: Path, names: Sequence[str]) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise data_not_found(
        f"an image folder ({' or '.join(n + '/' for n in names)})", root, FOLDER_LAYOUT, downloadable=False
    )


def _unreadable(root: Path, path: str) -> DataError:
    return DataError(
        f"image folder {root}: cannot read {path} (permission denied). Fix: make it readable "
        f"(chmod -R u+rX {root}), or point data.root at a copy you can read"
    )


def is_image_file(path: str) -> bool:
    """Whether ImageFolder reads the file: an image extension (torchvision's IMG_EXTENSIONS).  Anything
    else in a class folder (``.DS_Store``, a README) is left out, and counted."""
    return tvd.folder.has_file_allowed_extension(path, tvd.folder.IMG_EXTENSIONS)


class _NotImages:
    """ImageFolder's ``is_valid_file``: the image files, counting the other files it leaves out."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def __call__(self, path: str) -> bool:
        if is_image_file(path):
            return True
        self.skipped.append(path)
        return False


def _image_folder(
    root: Path, names: Sequence[str], cfg: DataConfig
) -> tuple[tvd.ImageFolder, Optional[dict[str, tuple[int, int]]]]:
    """The first split folder of ``names`` under ``root``, every file checked (``data.verify``)
    before any is decoded, so a damaged one is named before training starts.  A folder that cannot
    be listed, or holds no class folders or no images, is one line naming it; files that are not
    images are left out, as ImageFolder does, with a note.  Returns the folder and, when checked, every
    image's size (W, H) as its header gives it."""
    others = _NotImages()
    try:
        split = split_folder(root, names)
        folder = tvd.ImageFolder(str(split), is_valid_file=others)
    except DataNotFoundError:
        raise
    except PermissionError as e:
        raise _unreadable(root, e.filename) from None
    except FileNotFoundError as e:  # torchvision: no class folder, or a class without image files
        locked: list[OSError] = []
        for _ in os.walk(split, onerror=locked.append):  # torchvision skips the folders it cannot list
            pass
        if locked:
            raise _unreadable(root, locked[0].filename) from None
        raise DataNotFoundError(
            f"image folder {split} holds no images to use ({' '.join(str(e).split())}); "
            f"{FOLDER_LAYOUT}. Fix: put the images there, or point data.root at the folder "
            f"that holds them"
        ) from None
    if others.skipped:
        log.info(
            "image folder %s: left out %d file(s) that are not images, e.g. %s",
            split,
            len(others.skipped),
            others.skipped[0],
        )
    return folder, check_images(folder, cfg.skip_corrupt) if cfg.verify else None


def folder_splits(
    root: Path, test_names: Sequence[str], cfg: DataConfig
) -> tuple[tvd.ImageFolder, tvd.ImageFolder, Optional[dict[str, tuple[int, int]]]]:
    """The training split ``root/train`` and the first of ``test_names`` of every folder data set, with
    the one rule they share: the same class folders.  ImageFolder numbers the classes of each split in
    sorted order, so a split that lacks one would shift every later label (its 'truck' scored as
    train's 'ship').  Also returns every image's size when ``data.verify`` read the headers."""
    train, train_sizes = _image_folder(root, ["train"], cfg)
    test, test_sizes = _image_folder(root, test_names, cfg)
    if train.classes != test.classes:
        split = Path(test.root).name
        missing = sorted(set(train.classes) - set(test.classes))
        extra = sorted(set(test.classes) - set(train.classes))
        what = "; ".join(
            [
                *([f"{split}/ lacks {', '.join(map(repr, missing))} that train/ has"] if missing else []),
                *([f"{split}/ has {', '.join(map(repr, extra))} that train/ lacks"] if extra else []),
            ]
        )
        raise DataError(
            f"image folder {root}: train/ and {split}/ hold different classes ({what}), so their labels "
            f"would not match. Fix: give both the same class folders"
        )
    sizes = None if train_sizes is None or test_sizes is None else {**train_sizes, **test_sizes}
    return train, test, sizes


END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def image_problem(path: str) -> tuple[Optional[str], Optional[tuple[int, int]]]:
    """Why the image at ``path`` cannot be read, in a few words (None when it can), and its size (W, H)
    from the header (None when unreadable)."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file", None
        with open(path, "rb") as f, Image.open(f) as img:
            size = img.size
            end = END_MARKERS.get(img.format or "")
            if end is not None:
                f.seek(-len(end), os.SEEK_END)
                if f.read(len(end)) == end:
                    return None, size
            img.load()
    except Exception as e:  # whatever the decoder raises, the loader would raise it mid-epoch
        return " ".join(f"{type(e).__name__}: {e}".split()), None
    return None, size


def check_images(folder: ImageFolder, skip: bool) -> dict[str, tuple[int, int]]:
    """Refuse a folder holding an unreadable image, naming it; with ``skip``, drop those files and
    say how many (``data.skip_corrupt=true``).  Returns every kept image's size (W, H)."""
    bad: dict[str, str] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for path, _ in folder.samples:
        why, size = image_problem(path)
        if why is not None:
            bad[path] = why
        else:
            assert size is not None  # image_problem gives the size whenever it finds no problem
            sizes[path] = size
    if not bad:
        return sizes
    first, why = next(iter(bad.items()))
    if not skip:
        more = f" ({len(bad) - 1} more unreadable files under {folder.root})" if len(bad) > 1 else ""
        raise DataError(
            f"image {first} cannot be read ({why}){more}. Fix: replace or delete it, or set "
            f"data.skip_corrupt=true to train without unreadable files"
        )
    folder.samples = folder.imgs = [s for s in folder.samples if s[0] not in bad]
    folder.targets = [t for _, t in folder.samples]
    log.warning(
        "skipped %d unreadable image file(s) of %s (data.skip_corrupt=true), e.g. %s (%s)",
        len(bad),
        folder.root,
        first,
        why,
    )
    return sizes


def other_size(path: str, other: tuple[int, int], size: tuple[int, int]) -> DataError:
    """The refusal of an image of another size than its folder's first, (W, H) each."""
    return DataError(
        f"image {path} is {other[0]}x{other[1]} px where the folder's first image is {size[0]}x{size[1]}: "
        f"data=imagefolder trains at one size. Fix: resize or remove it, or set data.image_size to resize "
        f"every image, train and test alike"
    )


GB = 1e9


# Files one thread decodes per task: few tasks to schedule, still enough to share among threads.
CHUNK = 512


class OtherSize(Exception):
    """An image of another size than the folder's first: the folder cannot be one tensor."""

    def __init__(self, path: str, size: tuple[int, int]) -> None:
        super().__init__(path, size)
        self.path, self.size = path, size


def _decode_chunk(out: np.ndarray, samples: Sequence[tuple[str, int]], start: int, stop: int) -> None:
    """Decode ``samples[start:stop]`` into ``out[start:stop]``; the sizes are checked before decoding."""
    h, w = out.shape[-2:]
    for i in range(start, stop):
        path = samples[i][0]
        with open(path, "rb") as f, Image.open(f) as img:
            if img.size != (w, h):
                raise OtherSize(path, img.size)
            out[i] = np.asarray(img.convert("RGB")).transpose(2, 0, 1)


def decode_folder(
    folder: ImageFolder, size: tuple[int, int], threads: Optional[int] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``folder`` as uint8 (N, 3, H, W) of ``size`` (H, W), and its labels; raises
    :class:`OtherSize` at the first image of another size."""
    samples = folder.samples
    out = torch.empty(len(samples), 3, *size, dtype=torch.uint8)
    spans = [(s, min(s + CHUNK, len(samples))) for s in range(0, len(samples), CHUNK)]
    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        tasks = [pool.submit(_decode_chunk, out.numpy(), samples, *span) for span in spans]
        try:
            for task in tasks:
                task.result()
        except OtherSize:
            for task in tasks:
                task.cancel()
            raise
    return out, torch.as_tensor(folder.targets, dtype=torch.int64)


def _refuse(cfg: DataConfig, why: str, fix: str = "") -> None:
    """With ``data.on_device=true`` a folder that cannot be held is the user's to fix; with auto it reads
    its files, as it always could."""
    if cfg.on_device is True:
        raise ConfigError(
            f"data.on_device=true is not allowed for data={cfg.name} at {cfg.root}: {why}. Fix: "
            f"{fix}use data.on_device=auto or false to read the files"
        )
    log.info("data=%s reads its image files in DataLoader workers: %s", cfg.name, why)


def hold_in_memory(
    cfg: DataConfig, folders: Sequence[ImageFolder], size: tuple[int, int]
) -> Optional[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Each folder's (images, labels), decoded, when ``data.on_device`` may use them and they are small:
    all images of ``size`` (the first image's (H, W)), square, under ``data.in_memory_max_gb``; else None.
    Count and size are judged before any image is decoded."""
    if cfg.on_device is False:
        return None
    h, w = size
    n = sum(len(f) for f in folders)
    gb = n * 3 * h * w / GB
    if h != w:
        _refuse(cfg, f"its images are {w}x{h} px, not square")
        return None
    if gb > cfg.in_memory_max_gb:
        _refuse(
            cfg,
            f"its {n:,} images of {w}x{h} px take {gb:.2f} GB in memory, over "
            f"data.in_memory_max_gb={cfg.in_memory_max_gb}",
            "raise data.in_memory_max_gb, or ",
        )
        return None
    start = time.perf_counter()
    try:
        held = [decode_folder(f, size) for f in folders]
    except OtherSize as e:
        if cfg.image_size is None:  # the files could not be batched either (data.verify=false found nothing)
            raise other_size(e.path, e.size, (w, h)) from None
        _refuse(cfg, f"its images are not all one size ({e.path} is {e.size[0]}x{e.size[1]} px, the first {w}x{h})")
        return None
    log.info(
        "decoded the %d images of data.root=%s into memory (%.2f GB) in %.1f s",
        n,
        cfg.root,
        gb,
        time.perf_counter() - start,
    )
    return held
