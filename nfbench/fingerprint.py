"""The fingerprint of a set of images: one sha256 over their decoded pixels.

Two copies of CIFAR-10 can hold the same 60,000 images and differ in every pixel (the original
release against its JPEG re-encoding, shared/data/README.md), and accuracies are only comparable
on the same pixels. The digest names which pixels a run saw: ``scripts/cifar_from_images.py``
checks it when it converts, and a run can record it for the arrays it loaded.

Definition (the data README's): uint8 pixels, each image in height x width x channel order,
images concatenated in their stored order, hashed as one byte string. nfbench holds images as
(N, C, H, W), so they are transposed to (N, H, W, C) first: the digest of an array does not
depend on the layout it is kept in, only on the pixels and their order.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

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
        raise ValueError(f"pixels_sha256 takes uint8 images (N, C, H, W), got {images.dtype} of shape "
                         f"{tuple(images.shape)}")
    hwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    return hashlib.sha256(hwc).hexdigest()
