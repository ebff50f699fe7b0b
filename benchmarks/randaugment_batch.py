"""RandAugment on one batch: nfbench.data.augment (whole-batch ops, graph-capturable) against
nfbench.data.device's grouped version (the batch sorted by draw, torchvision's op per group).

Both on the same images (real CIFAR-10 test images from ../shared/data when present, random
pixels otherwise), the same num_ops and magnitude, interleaved rounds, medians. Per batch:

- grouped apply: ``device_data.BatchRandAugment.apply`` with its plan (sort permutations and group
  sizes) made beforehand, as ``DeviceLoader`` makes it once per epoch on the host;
- grouped plan: that per-batch share of the plan (draw keys, argsort, bincount to the host);
- whole-batch apply: ``batch_augment.BatchRandAugment.__call__`` with its draws made beforehand;
- whole-batch draw: ``batch_augment.BatchRandAugment.draw``;
- per image: ``v2.RandAugment`` called on each image in turn (for scale).

Prints milliseconds per batch and the ratios whole-batch / grouped (below 1: whole-batch is faster).
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path, PurePath

import numpy as np
import torch
from torchvision.transforms import v2

from common import device_of, footer, header, median, timed

from nfbench.data import augment as batch_augment
from nfbench.data import device as device_data

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


def grouped_plan(ra: device_data.BatchRandAugment, n: int, gen: torch.Generator):
    """What DeviceLoader._plan_randaugment makes for one batch: sort permutations, inverses, group sizes."""
    keys = ra.draw(n, gen).T
    perm = torch.argsort(keys, dim=1, stable=True)
    counts = torch.stack([torch.bincount(row, minlength=ra.num_keys) for row in keys]).tolist()
    return perm, torch.argsort(perm, dim=1), counts


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
    grouped = device_data.BatchRandAugment(a.num_ops, a.magnitude, (32, 32))
    whole = batch_augment.BatchRandAugment(a.num_ops, a.magnitude, (32, 32))
    gen = torch.Generator(device).manual_seed(0)
    cpu_gen = torch.Generator().manual_seed(0)
    per_image = v2.RandAugment(a.num_ops, a.magnitude)
    times: dict[str, list[float]] = {k: [] for k in ("grouped apply", "grouped plan", "whole apply", "whole draw",
                                                     "per image")}
    for r in range(a.rounds + 2):  # two warm-up rounds, not counted
        perm, inverse, counts = grouped_plan(grouped, a.batch, cpu_gen)
        perm, inverse = perm.to(device), inverse.to(device)
        ops, signs = whole.draw(a.batch, gen)
        round_times = {
            "grouped plan": timed(lambda: grouped_plan(grouped, a.batch, cpu_gen), device),
            "grouped apply": timed(lambda: grouped.apply(x, perm, inverse, counts), device),
            "whole draw": timed(lambda: whole.draw(a.batch, gen), device),
            "whole apply": timed(lambda: whole(x, ops, signs), device),
            "per image": timed(lambda: [per_image(img) for img in x], device),
        }
        if r >= 2:
            for k, t in round_times.items():
                times[k].append(t)
    ms = {k: 1000 * median(v) for k, v in times.items()}
    for k, v in ms.items():
        print(f"{k:16s} {v:8.2f} ms per batch")
    print(f"whole apply / grouped apply:                   {ms['whole apply'] / ms['grouped apply']:.2f}")
    print(f"(whole draw + apply) / (grouped plan + apply): "
          f"{(ms['whole draw'] + ms['whole apply']) / (ms['grouped plan'] + ms['grouped apply']):.2f}")
    footer()


if __name__ == "__main__":
    main()
