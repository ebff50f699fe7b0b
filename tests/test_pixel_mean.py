"""data.pixel_mean (He et al. 2016a): x/255 minus the training images' mean image, the same on the DataLoader
path (nfbench.data.transforms) and the on-device path (DeviceLoader.normalise), subtracted after crop and flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from nfbench.data.device import DeviceLoader, in_memory
from nfbench.data.loaders import build_loaders
from nfbench.data.sets import DataSource, TensorImages
from nfbench.data.source import build_source, with_transform
from nfbench.data.transforms import mean_image, transforms
from nfbench.engine.validation import validate
from nfbench.errors import ConfigError

SIZE, PAD = 6, 2


def numpy_mean(images: torch.Tensor) -> np.ndarray:
    """The mean image of uint8 (N, C, H, W) images on the [0, 1] scale, in float64, by numpy."""
    return images.numpy().astype(np.float64).mean(axis=0) / 255.0


def by_hand(images: torch.Tensor, mean: np.ndarray) -> torch.Tensor:
    """x / 255 - mean image, in float64: no std anywhere."""
    return torch.from_numpy(images.numpy().astype(np.float64) / 255.0 - mean[None])


def assert_same(x: torch.Tensor, expected: torch.Tensor) -> None:
    """float32 against float64: within float32's rounding of values in [-1, 1]."""
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-6)


def source(cfg, n: int = 48, n_test: int = 20) -> tuple[DataSource, torch.Tensor, torch.Tensor]:
    """Random uint8 images whose label is their index, wrapped as build_source wraps a data set, with the mean
    image of the training images as nfbench computes it."""
    g = torch.Generator().manual_seed(3)
    raw = torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    test = torch.randint(0, 256, (n_test, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    train_ds = TensorImages(raw, torch.arange(n))
    src = DataSource(
        train_ds,
        TensorImages(test, torch.arange(n_test)),
        num_classes=n,
        in_chans=3,
        image_size=SIZE,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        mean_image=mean_image(train_ds, 3, SIZE),
    )
    src.train = with_transform(src.train, transforms(cfg.data, src, train=True))
    src.test = with_transform(src.test, transforms(cfg.data, src, train=False))
    return src, raw, test


def cfg_with(make_cfg, *overrides: str):
    return make_cfg(["data=digits", "data.pixel_mean=true", "data.batch_size=8", "data.test_batch_size=7", *overrides])


def test_the_mean_image_is_numpys_mean_over_the_training_images():
    images = torch.randint(0, 256, (300, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = mean_image(TensorImages(images, torch.zeros(300, dtype=torch.int64)), 3, 5, chunk=64)
    assert got.shape == (3, 5, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), torch.from_numpy(numpy_mean(images)), rtol=0, atol=1e-7)
    assert got.std() > 0.01  # a different mean at every pixel: not a per-channel constant


def test_both_paths_give_x_over_255_minus_the_mean_image(make_cfg):
    """Without augmentation, training and test batches of the DataLoader path and of the device path are the
    hand computation x/255 - mean image, the training images' mean; the test images get the same mean."""
    cfg = cfg_with(make_cfg, "data.crop_padding=0", "data.hflip=false")
    host_cfg = cfg_with(make_cfg, "data.crop_padding=0", "data.hflip=false", "data.on_device=false")
    src, raw, test = source(cfg)
    mean = numpy_mean(raw)
    device_train, device_test = build_loaders(cfg.data, src, seed=0)
    host_train, host_test = build_loaders(host_cfg.data, src, seed=0)
    assert isinstance(device_train, DeviceLoader) and isinstance(host_train, DataLoader)
    for loader in (device_train, host_train):
        loader.sampler.set_epoch(1)
    for (x, y), (hx, hy) in zip(device_train, host_train, strict=True):
        assert torch.equal(y, hy)
        assert_same(x, by_hand(raw[y], mean))
        assert_same(hx, by_hand(raw[y], mean))
        torch.testing.assert_close(x, hx, rtol=0, atol=1e-6)
    for loader in (device_test, host_test):
        x, y = (torch.cat(parts) for parts in zip(*loader))
        assert torch.equal(y, torch.arange(len(test)))
        assert_same(x, by_hand(test, mean))  # the training images' mean, not the test images' own
    assert not np.allclose(numpy_mean(test), mean, atol=1e-3)


@pytest.mark.parametrize("on_device", ["auto", "false"])
def test_the_mean_is_subtracted_after_crop_and_flip(make_cfg, on_device):
    """The mean image is in the crop's coordinates: adding it back to a training image gives exact pixel values,
    a window of the zero-padded image, mirrored or not.  Subtracted before the crop, the sums would not be
    whole numbers (the mean differs from pixel to pixel)."""
    cfg = cfg_with(make_cfg, f"data.crop_padding={PAD}", "data.hflip=true", f"data.on_device={on_device}")
    src, raw, _ = source(cfg)
    mean = torch.from_numpy(numpy_mean(raw))
    train, _ = build_loaders(cfg.data, src, seed=0)
    padded = torch.nn.functional.pad(raw, (PAD,) * 4)
    windows = {(r, c, f) for r in range(2 * PAD + 1) for c in range(2 * PAD + 1) for f in (0, 1)}
    seen, shifted = set(), 0
    train.sampler.set_epoch(0)
    torch.manual_seed(0)
    for x, y in train:
        pixels = (x.double() + mean) * 255
        assert (pixels - pixels.round()).abs().max() < 1e-3
        for img, i in zip(pixels.round().to(torch.uint8), y.tolist()):
            found = {
                (r, c, f)
                for r, c, f in windows
                if torch.equal(
                    img,
                    padded[i, :, r : r + SIZE, c : c + SIZE].flip(-1)
                    if f
                    else padded[i, :, r : r + SIZE, c : c + SIZE],
                )
            }
            assert found, f"sample {i} is no window of its padded image"
            seen |= found
            shifted += (PAD, PAD, 0) not in found and (PAD, PAD, 1) not in found
    assert shifted > 20 and {f for _, _, f in seen} == {0, 1}


@pytest.mark.parametrize("split", [["data.val_size=300"], ["data.val_size=0.25", "data.train_subset=500"]])
def test_the_mean_is_of_the_images_trained_on_only(make_cfg, split):
    """data=digits with a validation split (and a training subset): the mean image is numpy's over the
    training images alone; the held-out images do not enter it; validation and test images get it too, on
    both paths."""
    cfg = cfg_with(make_cfg, *split)
    src = build_source(cfg.data)
    train_x, _ = in_memory(src.train)
    val_x, _ = in_memory(src.val)
    test_x, _ = in_memory(src.test)
    mean = numpy_mean(train_x)
    assert src.mean_image is not None and src.mean_image.shape == (1, 8, 8)
    torch.testing.assert_close(src.mean_image.double(), torch.from_numpy(mean), rtol=0, atol=1e-7)
    assert len(train_x) == (500 if "data.train_subset=500" in split else 1438 - 300)
    # Digit images are far from uniform: the held-out images would move the mean.
    with_val = numpy_mean(torch.cat([train_x, val_x]))
    assert np.abs(with_val - mean).max() > 1e-3
    host = cfg_with(make_cfg, *split, "data.on_device=false")
    host_src = build_source(host.data)
    for run_cfg, run_src in ((cfg, src), (host, host_src)):
        _, test_loader = build_loaders(run_cfg.data, run_src, seed=0)
        from nfbench.data.loaders import eval_loader

        val_loader = eval_loader(run_cfg.data, run_src, run_src.val)
        for loader, images in ((test_loader, test_x), (val_loader, val_x)):
            x = torch.cat([b[0] for b in loader])
            assert_same(x, by_hand(images, mean))


def test_an_image_folder_read_from_its_files_gets_the_same_mean(make_cfg, tmp_path):
    """The DataLoader path of a folder read from its files (PIL images): the mean is decoded from every
    training image, and the test images come out as x/255 minus it."""
    g = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("test", 4)):
        for k in range(n):
            cls = f"c{k % 2}"
            (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
            arrays[split, cls, k] = g.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(arrays[split, cls, k]).save(tmp_path / split / cls / f"{k}.png")
    cfg = make_cfg(
        [
            "data=imagefolder",
            f"data.root={tmp_path}",
            "data.on_device=false",
            "data.pixel_mean=true",
            "data.test_batch_size=4",
            "data.num_workers=0",
        ]
    )
    src = build_source(cfg.data)
    assert src.pil
    train = np.stack([a.transpose(2, 0, 1) for (s, _, _), a in sorted(arrays.items()) if s == "train"])
    mean = train.astype(np.float64).mean(0) / 255
    torch.testing.assert_close(src.mean_image.double(), torch.from_numpy(mean), rtol=0, atol=1e-7)
    _, test_loader = build_loaders(cfg.data, src, seed=0)
    x = torch.cat([b[0] for b in test_loader])
    test = torch.from_numpy(np.stack([a.transpose(2, 0, 1) for (s, _, _), a in sorted(arrays.items()) if s == "test"]))
    assert_same(x, by_hand(test, mean))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["data.mean=[0.5]", "data.std=[0.2]"],
            "data.pixel_mean=true cannot run with data.mean=\\[0.5\\] data.std="
            "\\[0.2\\]: .*set data.mean=null data.std=null, or data.pixel_mean=false",
        ),
        (["data.mean=[0.5]"], "data.pixel_mean=true cannot run with data.mean"),
    ],
)
def test_pixel_mean_refuses_a_per_channel_normalisation(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message) as refusal:
        validate(cfg_with(make_cfg, *overrides))
    assert "\n" not in str(refusal.value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["data.image_size=16"],
            "data.pixel_mean=true needs data=digits's own image size: data.image_size=16 resizes its 8 px images",
        ),
        (["data=imagenet", "data.root=/nonexistent"], "data.pixel_mean=true is not available for data=imagenet"),
    ],
)
def test_pixel_mean_refuses_another_pixel_grid_before_the_data_loads(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message) as refusal:
        build_source(cfg_with(make_cfg, *overrides).data)
    assert "\n" not in str(refusal.value)
    assert build_source(cfg_with(make_cfg, "data.image_size=8").data).mean_image.shape == (1, 8, 8)
