"""Small image folders decoded once into memory, so ``data.on_device`` serves them as it serves CIFAR.

Read from its files, a folder of small images is bound by decoding: every image of every epoch is
opened and decoded again in DataLoader workers, which on a CPU compete with the model for the
cores.  A folder whose images are all one square size and fit under ``data.in_memory_max_gb`` is
decoded once instead, by the loader ImageFolder itself uses (PIL, converted to RGB), into a uint8
(N, 3, H, W) tensor, in threads (Pillow's decoder releases the GIL).  Any other folder reads its
files as before; with ``data.on_device=true`` that is a one-line error saying why.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from nfbench.config import DataConfig
from nfbench.datacheck import other_size
from nfbench.errors import ConfigError

log = logging.getLogger("nfbench")

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


def decode_folder(folder: ImageFolder, size: tuple[int, int],
                  threads: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        raise ConfigError(f"data.on_device=true is not allowed for data={cfg.name} at {cfg.root}: {why}. Fix: "
                          f"{fix}use data.on_device=auto or false to read the files")
    log.info("data=%s reads its image files in DataLoader workers: %s", cfg.name, why)


def hold_in_memory(cfg: DataConfig, folders: Sequence[ImageFolder],
                   size: tuple[int, int]) -> Optional[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Each folder's (images, labels), decoded, when ``data.on_device`` may use them and they are small:
    all images of ``size`` (the first image's (H, W)), square, under ``data.in_memory_max_gb``; else None.
    Count and size are judged before any image is decoded."""
    if cfg.on_device is False:
        return None
    h, w = size
    n = sum(len(f) for f in folders)
    gb = n * 3 * h * w / GB
    if h != w:
        return _refuse(cfg, f"its images are {w}x{h} px, not square")
    if gb > cfg.in_memory_max_gb:
        return _refuse(cfg, f"its {n:,} images of {w}x{h} px take {gb:.2f} GB in memory, over "
                            f"data.in_memory_max_gb={cfg.in_memory_max_gb}", "raise data.in_memory_max_gb, or ")
    start = time.perf_counter()
    try:
        held = [decode_folder(f, size) for f in folders]
    except OtherSize as e:
        if cfg.image_size is None:  # the files could not be batched either (data.verify=false found nothing)
            raise other_size(e.path, e.size, (w, h)) from None
        return _refuse(cfg, f"its images are not all one size ({e.path} is {e.size[0]}x{e.size[1]} px, the "
                            f"first {w}x{h})")
    log.info("decoded the %d images of data.root=%s into memory (%.2f GB) in %.1f s", n, cfg.root, gb,
             time.perf_counter() - start)
    return held
