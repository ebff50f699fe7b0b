"""The on-device loader (nfbench/data/device.py): its batches against hand computations and against
the DataLoader path, its rank shards, its reproducibility, and training through it."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets as tvd
from torchvision.transforms import v2

from nfbench.data.device import DeviceLoader, use_device_loader
from nfbench.data.loaders import build_loaders
from nfbench.data.sets import DataSource, TensorImages
from nfbench.data.source import build_source, with_transform
from nfbench.data.transforms import transforms
from nfbench.engine.loop import train
from nfbench.errors import ConfigError, DataError
from tests.conftest import TINY
from tests.test_data import assert_stopped_runs_resume_exactly

MEAN, STD = (0.3, 0.5, 0.7), (0.2, 0.25, 0.3)


def make_source(cfg, n: int = 64, n_test: int = 20, size: int = 6) -> tuple[DataSource, torch.Tensor]:
    """Random uint8 images whose label is their index, wrapped as ``build_source`` wraps a data set."""
    g = torch.Generator().manual_seed(1)
    raw = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    test = torch.randint(0, 256, (n_test, 3, size, size), dtype=torch.uint8, generator=g)
    src = DataSource(
        TensorImages(raw, torch.arange(n)),
        TensorImages(test, torch.arange(n_test)),
        num_classes=n,
        in_chans=3,
        image_size=size,
        mean=MEAN,
        std=STD,
    )
    src.train = with_transform(src.train, transforms(cfg.data, src, train=True))
    src.test = with_transform(src.test, transforms(cfg.data, src, train=False))
    return src, raw


def by_hand(raw: torch.Tensor) -> torch.Tensor:
    """(v / 255 - mean_c) / std_c in float64."""
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (raw.double() / 255 - mean) / std


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to the exact pixel values."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def epoch_batches(loader, epoch: int, torch_seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(epoch)
    torch.manual_seed(torch_seed)
    return list(loader)


def cfg_with(make_cfg, *overrides: str):
    return make_cfg(["data=digits", "data.batch_size=8", "data.test_batch_size=7", *overrides])


def test_auto_picks_the_device_loader_for_in_memory_data(make_cfg):
    cfg = cfg_with(make_cfg)
    src, _ = make_source(cfg)
    train_loader, test_loader = build_loaders(cfg.data, src, seed=0)
    assert isinstance(train_loader, DeviceLoader) and isinstance(test_loader, DeviceLoader)
    off = cfg_with(make_cfg, "data.on_device=false")
    assert not isinstance(build_loaders(off.data, src, seed=0)[0], DeviceLoader)


def test_without_augmentation_batches_are_the_normalised_images_in_sampler_order(make_cfg):
    cfg = cfg_with(make_cfg, "data.crop_padding=0", "data.hflip=false")
    src, raw = make_source(cfg, n=60)
    device_train, device_test = build_loaders(cfg.data, src, seed=3)
    host_cfg = cfg_with(make_cfg, "data.crop_padding=0", "data.hflip=false", "data.on_device=false")
    host_train, host_test = build_loaders(host_cfg.data, src, seed=3)
    assert len(device_train) == len(host_train) == 60 // 8  # the ragged last batch is dropped
    for (x, y), (hx, hy) in zip(epoch_batches(device_train, 2), epoch_batches(host_train, 2), strict=True):
        assert torch.equal(y, hy)  # the DataLoader's order: the same sampler
        assert x.dtype == torch.float32 and torch.allclose(x.double(), by_hand(raw[y]), atol=1e-4)
        assert torch.allclose(x, hx, atol=1e-4)  # torchvision's ToDtype + Normalize
    test_batches = list(device_test)
    assert [len(y) for _, y in test_batches] == [7, 7, 6]  # every test image, in order, ragged batch kept
    x, y = torch.cat([b[0] for b in test_batches]), torch.cat([b[1] for b in test_batches])
    assert torch.equal(y, torch.arange(20))
    assert torch.allclose(x.double(), by_hand(src.test.images), atol=1e-4)


def test_crops_are_shifts_of_the_zero_padded_image(make_cfg):
    pad, size = 3, 6
    cfg = cfg_with(make_cfg, f"data.crop_padding={pad}", "data.hflip=false")
    src, raw = make_source(cfg, size=size)
    loader, _ = build_loaders(cfg.data, src, seed=0)
    padded = torch.nn.functional.pad(raw, (pad,) * 4)
    shifts = set()
    for x, y in epoch_batches(loader, 0, torch_seed=0) + epoch_batches(loader, 1, torch_seed=1):
        for img, i in zip(to_uint8(x), y.tolist()):
            found = [
                (r, c)
                for r in range(2 * pad + 1)
                for c in range(2 * pad + 1)
                if torch.equal(img, padded[i, :, r : r + size, c : c + size])
            ]
            assert found, f"sample {i} is no window of its padded image"
            shifts.update(found)
    # 128 crops drawn from 49 offsets: about 45 distinct expected, corners included.
    assert len(shifts) >= 38 and {(0, 0), (2 * pad, 2 * pad)} <= shifts


def test_flip_mirrors_about_half_the_images(make_cfg):
    cfg = cfg_with(make_cfg, "data.crop_padding=0", "data.hflip=true")
    src, raw = make_source(cfg)
    loader, _ = build_loaders(cfg.data, src, seed=0)
    flipped = 0
    for x, y in epoch_batches(loader, 0):
        for img, i in zip(to_uint8(x), y.tolist()):
            if torch.equal(img, raw[i].flip(-1)):
                flipped += 1
            else:
                assert torch.equal(img, raw[i])
    assert 16 <= flipped <= 48  # of 64, each mirrored with probability 1/2


def test_randaugment_gives_each_sample_its_own_op(make_cfg):
    """With one op per image, every output is one of torchvision's RandAugment ops (either sign) applied to
    that image alone (torchvision.transforms.v2.functional, as v2.RandAugment calls it), and one batch holds
    many different ops."""
    from nfbench.data.augment import OPS
    from tests.test_batch_augment import reference, tv_magnitude

    cfg = cfg_with(
        make_cfg,
        "data.crop_padding=0",
        "data.hflip=false",
        "data.randaugment=true",
        "data.randaugment_n=1",
        "data.randaugment_m=15",
        "data.batch_size=32",
    )
    src, raw = make_source(cfg, size=12)
    loader, _ = build_loaders(cfg.data, src, seed=0)
    used = set()
    for x, y in epoch_batches(loader, 0):
        for img, i in zip(to_uint8(x), y.tolist()):
            matches = {
                op
                for op in OPS
                for negated in (False, True)
                if torch.equal(img, reference(raw[i], op, tv_magnitude(op, 15, 12, 12, negated)))
            }
            assert matches, f"sample {i} is none of RandAugment's ops on its own image"
            used |= matches
    assert len(used) >= 10  # 64 draws from 14 ops


def test_with_the_step_captured_randaugment_leaves_the_workers_and_the_batches_stay(make_cfg):
    """capture (trainer.cuda_graph on CUDA): every batch is built in the training process, through the
    CapturedBuilder (eager on a CPU), even with data.num_workers set: the same batches as the workers build."""
    common = ["data.randaugment=true", "data.batch_size=16", "data.num_workers=2"]
    cfg = cfg_with(make_cfg, *common)
    src, _ = make_source(cfg, size=8)
    workers, _ = build_loaders(cfg.data, src, seed=0)
    captured, _ = build_loaders(cfg.data, src, seed=0, capture=True)
    assert workers._workers is not None and captured._workers is None and captured.captured is not None
    assert not captured.captured.capture  # no CUDA here: built eagerly, through the same function
    for (x, y), (cx, cy) in zip(epoch_batches(workers, 1, 1), epoch_batches(captured, 1, 1), strict=True):
        assert torch.equal(y, cy) and torch.equal(x, cx)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_batches_equal_the_eager_ones_on_cuda(make_cfg):
    """The batch builder captured in a CUDA graph and replayed gives the eager builder's batches, RandAugment
    included, and its replays make no host sync."""
    cfg = cfg_with(make_cfg, "data.randaugment=true", "data.batch_size=16")
    src, _ = make_source(cfg, n=128)
    cuda = torch.device("cuda")
    eager = epoch_batches(build_loaders(cfg.data, src, seed=0, device=cuda)[0], 1)
    loader, _ = build_loaders(cfg.data, src, seed=0, device=cuda, capture=True)
    assert loader.captured.capture
    loader.sampler.set_epoch(1)
    torch.manual_seed(0)
    got = [(x.clone(), y.clone()) for x, y in loader]  # the static batch is overwritten by the next replay
    assert loader.captured.graph is not None and len(got) == len(eager)
    for (x, y), (ex, ey) in zip(got, eager, strict=True):
        assert torch.equal(y, ey) and torch.equal(x, ex)


def test_randaugment_of_zero_ops_leaves_crop_and_flip(make_cfg):
    src, _ = make_source(cfg_with(make_cfg))
    plain, _ = build_loaders(cfg_with(make_cfg).data, src, seed=0)
    zero, _ = build_loaders(cfg_with(make_cfg, "data.randaugment=true", "data.randaugment_n=0").data, src, seed=0)
    for (x, y), (zx, zy) in zip(epoch_batches(plain, 0), epoch_batches(zero, 0), strict=True):
        assert torch.equal(x, zx) and torch.equal(y, zy)


def test_randaugment_in_worker_processes_gives_the_same_batches(make_cfg):
    """The plan is drawn in the training process; workers only build: same batches, epoch after epoch."""
    common = ["data.randaugment=true", "data.batch_size=16"]
    cfg = cfg_with(make_cfg, *common)
    src, _ = make_source(cfg, size=8)
    here, _ = build_loaders(cfg.data, src, seed=0)
    workers, _ = build_loaders(cfg_with(make_cfg, *common, "data.num_workers=2").data, src, seed=0)
    assert workers._workers is not None and here._workers is None
    for epoch in (0, 1):
        for (x, y), (wx, wy) in zip(
            epoch_batches(here, epoch, epoch), epoch_batches(workers, epoch, epoch), strict=True
        ):
            assert torch.equal(y, wy) and torch.equal(x, wx)


def test_two_ranks_share_an_epoch_exactly_as_the_distributed_sampler_does(make_cfg):
    cfg = cfg_with(make_cfg, "data.batch_size=16")  # 8 per rank
    host = cfg_with(make_cfg, "data.batch_size=16", "data.on_device=false")
    src, _ = make_source(cfg, n=70, n_test=21)
    seen, test_seen = [], []
    for rank in (0, 1):
        loader, test_loader = build_loaders(cfg.data, src, seed=4, rank=rank, world_size=2)
        host_loader, _ = build_loaders(host.data, src, seed=4, rank=rank, world_size=2)
        assert len(loader) == len(host_loader) == 35 // 8
        labels = [y for _, y in epoch_batches(loader, 5)]
        assert all(len(y) == 8 for y in labels)
        assert torch.equal(torch.cat(labels), torch.cat([y for _, y in epoch_batches(host_loader, 5)]))
        seen.append(torch.cat(labels))
        test_seen.append(torch.cat([y for _, y in test_loader]))
    both = torch.cat(seen)
    assert len(both) == len(set(both.tolist())) == 64  # no sample twice; 70 - 2 * 3 ragged left out
    assert sorted(torch.cat(test_seen).tolist()) == list(range(21))  # every test image once


def test_order_depends_on_seed_and_epoch_and_augmentation_on_the_rng(make_cfg):
    cfg = cfg_with(make_cfg, "data.randaugment=true")
    src, _ = make_source(cfg)
    loader, _ = build_loaders(cfg.data, src, seed=0)

    def stack(batches):
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    x1, y1 = stack(epoch_batches(loader, 1, torch_seed=7))
    x2, y2 = stack(epoch_batches(loader, 1, torch_seed=7))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # same (seed, epoch) and RNG state: same batches
    x3, y3 = stack(epoch_batches(loader, 1, torch_seed=8))
    assert torch.equal(y1, y3) and not torch.equal(x1, x3)  # the RNG draws the augmentation, not the order
    assert not torch.equal(y1, stack(epoch_batches(loader, 2, torch_seed=7))[1])
    other, _ = build_loaders(cfg.data, src, seed=1)
    assert not torch.equal(y1, stack(epoch_batches(other, 1, torch_seed=7))[1])


def test_on_device_true_refuses_what_it_cannot_serve(make_cfg):
    cfg = cfg_with(make_cfg, "data.on_device=true")
    files = DataSource(
        TensorDataset(torch.zeros(4, 3, 8, 8)),
        TensorDataset(torch.zeros(2, 3, 8, 8)),
        num_classes=2,
        in_chans=3,
        image_size=8,
        mean=MEAN,
        std=STD,
        pil=True,
    )
    with pytest.raises(ConfigError, match="data.on_device=true .* reads image files"):
        use_device_loader(cfg.data, files)
    src, _ = make_source(cfg)
    resized = cfg_with(make_cfg, "data.on_device=true", "data.image_size=12")
    with pytest.raises(ConfigError, match="data.image_size=12"):
        use_device_loader(resized.data, src)
    assert not use_device_loader(cfg_with(make_cfg, "data.image_size=12").data, src)  # auto falls back


@pytest.mark.parametrize("value", ["yes", "1"])
def test_on_device_values_are_validated(make_cfg, value):
    from nfbench.engine.validation import validate

    with pytest.raises(ConfigError, match="data.on_device"):
        validate(make_cfg([f"data.on_device={value}"]))


@pytest.mark.parametrize("workers", [0, 2], ids=["on-device", "randaugment-in-workers"])
def test_training_through_the_device_loader_resumes_exactly(make_cfg, tmp_path, monkeypatch, workers):
    """Stopped after epoch 1 of 2 (or 3 steps into epoch 2) and resumed == uninterrupted, with RandAugment
    drawn on the device or in worker processes."""
    cfg = [
        *TINY,
        "data.on_device=true",
        "data.randaugment=true",
        "trainer.deterministic=true",
        f"data.num_workers={workers}",
        "trainer.checkpoint_every_steps=3",
    ]
    full = train(make_cfg(cfg, tmp_path / "full"))
    assert full["status"] == "finished" and math.isfinite(full["train_loss"])
    assert_stopped_runs_resume_exactly(make_cfg, monkeypatch, cfg, tmp_path, mid_epoch_step=3)


# -- small image folders, decoded into memory ----------------------------------------------------------------


def decoded(path: str) -> torch.Tensor:
    """The file's pixels as PIL decodes them for ImageFolder (RGB), uint8 (3, H, W)."""
    with Image.open(path) as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)


def pixels(x: torch.Tensor, src: DataSource) -> torch.Tensor:
    """Undo a batch's normalisation with the source's statistics: back to exact uint8 pixels."""
    mean, std = torch.tensor(src.mean).view(1, -1, 1, 1), torch.tensor(src.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def test_a_small_image_folder_is_served_from_memory_with_the_files_pixels(make_cfg, cifar10_jpeg_subset):
    """The real CIFAR-10 JPEGs under data.on_device=auto: DeviceLoader batches whose test images are the
    decoded files and whose training crops and flips are the DataLoader path's for the same draws."""
    root = cifar10_jpeg_subset
    common = ["data=imagefolder", f"data.root={root}", "data.batch_size=100", "data.crop_padding=4"]
    src = build_source(make_cfg(common).data)
    cfg = make_cfg(common)
    train_loader, test_loader = build_loaders(cfg.data, src, seed=0)
    assert isinstance(train_loader, DeviceLoader) and isinstance(test_loader, DeviceLoader)
    files = {split: tvd.ImageFolder(str(root / split)).samples for split in ("train", "test")}

    host_cfg = make_cfg([*common, "data.on_device=false"])
    host_src = build_source(host_cfg.data)
    host_test = build_loaders(host_cfg.data, host_src, seed=0)[1]
    assert isinstance(host_test, DataLoader) and (src.mean, src.std) == (host_src.mean, host_src.std)
    x, y = (torch.cat(parts) for parts in zip(*test_loader))
    assert torch.equal(y, torch.tensor([label for _, label in files["test"]]))
    assert torch.equal(pixels(x, src), torch.stack([decoded(path) for path, _ in files["test"]]))
    assert torch.allclose(x, torch.cat([hx for hx, _ in host_test]), atol=1e-5)  # the DataLoader path's floats

    train_loader.sampler.set_epoch(1)
    torch.manual_seed(5)
    plan = train_loader.plan()
    x, y = (torch.cat(parts) for parts in zip(*epoch_batches(train_loader, 1, torch_seed=5)))
    assert len(y) == 2000 and 500 < int(plan.flip.sum()) < 1500
    for k in range(len(y)):
        path, label = files["train"][int(plan.index[k])]
        top, left = divmod(int(plan.offset[k]), 32 + 2 * 4)
        # v2.RandomCrop(32, padding=4) then v2.RandomHorizontalFlip(), at this plan's draws.
        expected = v2.functional.crop(v2.functional.pad(decoded(path), [4]), top, left, 32, 32)
        if plan.flip[k]:
            expected = v2.functional.horizontal_flip(expected)
        assert int(y[k]) == label and torch.equal(pixels(x[k : k + 1], src)[0], expected), path


def small_tree(src: Path, dst: Path, per_class: int = 10) -> Path:
    """Two classes of the real JPEGs, ``per_class`` images each in train/ and test/."""
    for split in ("train", "test"):
        for cls in sorted(p.name for p in (src / split).iterdir())[:2]:
            (dst / split / cls).mkdir(parents=True)
            for path in sorted((src / split / cls).iterdir())[:per_class]:
                shutil.copy(path, dst / split / cls / path.name)
    return dst


def test_a_folder_of_mixed_sizes_is_refused_before_training(make_cfg, tmp_path, cifar10_jpeg_subset):
    """data=imagefolder trains at one size: a 40 px image among 32 px ones is named by the up-front check
    (before, such a folder read its files and failed at the first evaluation that met one)."""
    root = small_tree(cifar10_jpeg_subset, tmp_path / "data")
    other = sorted((root / "train").rglob("*.jpg"))[7]
    with Image.open(other) as img:
        img.resize((40, 40)).save(other)
    for on_device in ("auto", "true", "false"):
        with pytest.raises(DataError, match="40x40 px where the folder's first image is 32x32") as e:
            build_source(make_cfg(["data=imagefolder", f"data.root={root}", f"data.on_device={on_device}"]).data)
        assert str(other) in str(e.value) and "\n" not in str(e.value)
    resized = build_source(make_cfg(["data=imagefolder", f"data.root={root}", "data.image_size=32"]).data)
    assert resized.pil and resized.train[0][0].shape == (3, 32, 32)  # data.image_size resizes every image


def test_a_folder_over_the_memory_cap_reads_its_files(make_cfg, tmp_path, cifar10_jpeg_subset):
    """40 images of 3 x 32 x 32 bytes are 0.12 MB: over a cap of 0.1 MB, under one of 0.2 MB."""
    root = small_tree(cifar10_jpeg_subset, tmp_path / "data")
    common = ["data=imagefolder", f"data.root={root}", "data.batch_size=4"]
    over = make_cfg([*common, "data.in_memory_max_gb=0.0001"]).data
    src = build_source(over)
    assert src.pil and not isinstance(build_loaders(over, src, seed=0)[0], DeviceLoader)
    assert not build_source(make_cfg([*common, "data.in_memory_max_gb=0.0002"]).data).pil
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "nfbench.cli",
            "train",
            *common,
            "data.in_memory_max_gb=0.0001",
            "data.on_device=true",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    error = [line for line in run.stderr.splitlines() if line.startswith("nfbench: error:")]
    assert len(error) == 1 and "data.on_device=true is not allowed" in error[0], run.stderr
    assert "40 images of 32x32 px take 0.00 GB" in error[0] and "raise data.in_memory_max_gb" in error[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "extra", [[], ["data.randaugment=true", "data.num_workers=2"]], ids=["on-device", "randaugment-in-workers"]
)
def test_cuda_batches_equal_the_cpu_ones_without_a_host_sync(make_cfg, extra):
    """All draws are made on the CPU, so CUDA gives the CPU's batches; after the epoch's plan is copied
    over (first batch), yielding batches never waits on the device."""
    cfg = cfg_with(make_cfg, "data.crop_padding=2", "data.hflip=true", "data.batch_size=16", *extra)
    src, _ = make_source(cfg, n=256)
    expected = epoch_batches(build_loaders(cfg.data, src, seed=0, device=torch.device("cpu"))[0], 1)
    loader, _ = build_loaders(cfg.data, src, seed=0, device=torch.device("cuda"))
    loader.sampler.set_epoch(1)
    torch.manual_seed(0)
    batches = iter(loader)
    got = [next(batches)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        got += list(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(got) == len(expected) == 16
    for (x, y), (cx, cy) in zip(got, expected, strict=True):
        assert x.is_cuda and torch.equal(y.cpu(), cy) and torch.allclose(x.cpu(), cx, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_waits_on_the_device_only_at_log_steps(make_cfg, tmp_path):
    """With trainer.log_every beyond the epoch, an epoch of 16 steps syncs as often as one of 8."""
    import warnings

    def syncs(n_images: int, run: str) -> int:
        cfg = make_cfg(
            [
                *TINY,
                f"data.train_subset={n_images}",
                "trainer.epochs=1",
                "trainer.device=cuda",
                "trainer.log_every=1000",
            ],
            tmp_path / run,
        )
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert train(cfg)["status"] == "finished"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    syncs(256, "warm-up")  # autotuning and lazy initialisation happen once per process
    assert syncs(256, "8-steps") == syncs(512, "16-steps")
