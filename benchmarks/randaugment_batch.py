"""RandAugment on one batch: nfbench.data.augment (whole-batch ops, every sample its own, capturable in a
CUDA graph) against torchvision's v2.RandAugment called on each image in turn.

On the same images (real CIFAR-10 test images from ../shared/data when present, random pixels otherwise),
the same num_ops and magnitude, interleaved rounds, medians. Per batch:

- whole-batch apply: ``BatchRandAugment.__call__`` with its draws made beforehand (as ``DeviceLoader``
  draws them once per epoch);
- whole-batch draw: ``BatchRandAugment.draw``;
- per image: ``v2.RandAugment`` on each image in turn.

The version that grouped the batch by draw and called torchvision per group (benchmarks/README.md (2c),
first table) reached into torchvision's private members and is gone (issues 22 and 24).

Prints milliseconds per batch and the ratio whole-batch / per image.
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path, PurePath

import numpy as np
import torch
from common import device_of, footer, header, median, timed
from torchvision.transforms import v2

from nfbench.data import augment as batch_augment

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def cifar_images(n: int) -> tuple[torch.Tensor, str]:
    """n real CIFAR-10 test images (uint8, (n, 3, 32, 32)), or random pixels if the tarball is absent."""
    if not SHARED_CIFAR.exists():
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), "random pixels"
    from PIL import Image

    images = []
    with tarfile.open(SHARED_CIFAR, "r:gz") as tar:
        for member in tar:
            if member.isfile() and PurePath(member.name).parts[-3] == "test":
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                    images.append(torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1))
                if len(images) == n:
                    break
    return torch.stack(images), f"{n} CIFAR-10 test images"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch's CPU threads (1 on a shared machine)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--num-ops", type=int, default=2)
    p.add_argument("--magnitude", type=int, default=9)
    p.add_argument("--rounds", type=int, default=30)
    a = p.parse_args()
    device = device_of(a)
    x, what = cifar_images(a.batch)
    x = x.to(device)
    header(f"RandAugment(num_ops={a.num_ops}, magnitude={a.magnitude}) on a batch of {a.batch} ({what})", device)
    whole = batch_augment.BatchRandAugment(a.num_ops, a.magnitude, (32, 32))
    gen = torch.Generator(device).manual_seed(0)
    per_image = v2.RandAugment(a.num_ops, a.magnitude)
    times: dict[str, list[float]] = {k: [] for k in ("whole apply", "whole draw", "per image")}
    for r in range(a.rounds + 2):  # two warm-up rounds, not counted
        ops, signs = whole.draw(a.batch, gen)
        round_times = {
            "whole draw": timed(lambda: whole.draw(a.batch, gen), device),
            "whole apply": timed(lambda ops=ops, signs=signs: whole(x, ops, signs), device),
            "per image": timed(lambda: [per_image(img) for img in x], device),
        }
        if r >= 2:
            for k, t in round_times.items():
                times[k].append(t)
    ms = {k: 1000 * median(v) for k, v in times.items()}
    for k, v in ms.items():
        print(f"{k:16s} {v:8.2f} ms per batch")
    print(f"whole apply / per image: {ms['whole apply'] / ms['per image']:.2f}")
    footer()


if __name__ == "__main__":
    main()
