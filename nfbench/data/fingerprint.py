"""The fingerprint of a set of images: one sha256 over their decoded pixels.

Two copies of CIFAR-10 can hold the same 60,000 images and differ in every pixel (the original
release against its JPEG re-encoding, shared/data/README.md), and accuracies are only comparable
on the same pixels. The digest names which pixels a run saw: ``scripts/cifar_from_images.py``
checks it when it converts, and a run can record it for the arrays it loaded.

Definition (the data README's): uint8 pixels, each image in height x width x channel order,
images concatenated in their stored order, hashed as one byte string. nfbench holds images as
(N, C, H, W), so they are transposed to (N, H, W, C) first: the digest of an array does not
depend on the layout it is kept in, only on the pixels and their order.

Known CIFAR-10 copies, as ``scripts/cifar_from_images.py`` converts them from ../shared/data
(train digest, then test; measured 2026-12-03 on the 2-core development machine, Pillow 13.0.0
with libjpeg-turbo 3.2.0, numpy 2.4.6):

- original pixels, ``cifar10-lossless-webp.tar.gz`` (the data README's values):
  61bea91e73ac2b02dfb856e685981dce64abe13d4e780aa98a1ac1e7c056d03b,
  52a9dc125982c0440d5eed87474b2f521e96c45a98df08e4329aa42c692b9d9d
- the JPEG copy, ``cifar10-jpeg.tar.gz`` decoded as is:
  bf3aabd52be912dae02a0435296c4dab5289524b57f55cd162dc4796935a611b,
  5a6aa8185204d80b65d3dfb540696dadd5f10d185ded226a96665d3e0fc6259f
- JPEG q75 from the original, the lossless tarball with ``--reencode 75``:
  9842bafe460d3e3b865f8f49f6fb443bf4ef84e5ef85f61eeb183f9bb64c1f61,
  f9eed0415a8698d53e40b0201a9d08c2425b81f4395dd3b62516fa0b45f3067a

The two JPEG rows are what this JPEG decoder (and, for q75, encoder) gives; another libjpeg may
round differently. The JPEG copy's files are named 0000.jpg..., not by their original names, so
its stored order differs from the original's as well as its pixels.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np

if TYPE_CHECKING:  # torch is not imported at run time: the converter script starts in a fraction of a second
    import torch


def pixels_sha256(images: np.ndarray | torch.Tensor) -> str:
    """The hex sha256 of uint8 ``images`` (N, C, H, W), hashed as their (N, H, W, C) bytes.

    One contiguous copy at most (none when the array is a CHW view of HWC storage, as a stack of
    decoded images transposed is), then one sha256 pass: for CIFAR's 184 MB about 0.3 s, plus 0.7 s
    for the copy from CHW storage (measured on one core of the 2-core development machine)."""
    if not isinstance(images, np.ndarray):  # a tensor, on any device
        images = images.detach().cpu().numpy()
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"pixels_sha256 takes uint8 images (N, C, H, W), got {images.dtype} of shape {tuple(images.shape)}"
        )
    hwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    return hashlib.sha256(hwc.data).hexdigest()


# The copies above by their (train, test) digests, as the report names them.
KNOWN_COPIES: dict[tuple[str, Optional[str]], str] = {
    (
        "61bea91e73ac2b02dfb856e685981dce64abe13d4e780aa98a1ac1e7c056d03b",
        "52a9dc125982c0440d5eed87474b2f521e96c45a98df08e4329aa42c692b9d9d",
    ): "original",
    (
        "bf3aabd52be912dae02a0435296c4dab5289524b57f55cd162dc4796935a611b",
        "5a6aa8185204d80b65d3dfb540696dadd5f10d185ded226a96665d3e0fc6259f",
    ): "JPEG copy",
    (
        "9842bafe460d3e3b865f8f49f6fb443bf4ef84e5ef85f61eeb183f9bb64c1f61",
        "f9eed0415a8698d53e40b0201a9d08c2425b81f4395dd3b62516fa0b45f3067a",
    ): "JPEG q75 from original",
}
UNKNOWN = "unknown"  # a run of an nfbench before fingerprints, or without one


def files_sha256(paths: Iterable[str], root: str) -> str:
    """The hex sha256 of a data set read from its files (an image folder too large to hold): each file's
    path relative to ``root`` and its size in bytes, one line each, in stored order.  Not the pixels
    (decoding ImageNet to hash it would take longer than an epoch): it tells two trees apart by their
    files, not two encodings of the same files."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{os.path.relpath(path, root)}\t{os.path.getsize(path)}\n".encode())
    return digest.hexdigest()


def copy_label(fingerprint: Optional[dict]) -> str:
    """The name of a known copy ("original", "JPEG copy", ...), else the train digest's first 12 hex digits
    (``files:`` before it for a digest of file listings), else :data:`UNKNOWN`."""
    if not fingerprint or not fingerprint.get("train"):
        return UNKNOWN
    known = KNOWN_COPIES.get((fingerprint["train"], fingerprint.get("test")))
    if known is not None and fingerprint.get("kind", "pixels") == "pixels":
        return known
    short = fingerprint["train"][:12]
    return f"files:{short}" if fingerprint.get("kind") == "files" else short
