"""The papers' augmentation and normalisation, on the DataLoader path (torchvision v2 transforms)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from nfbench.config import DataConfig
from nfbench.data.sets import DataSource, held_images, own_shape
from nfbench.errors import ConfigError, DataError


class SubtractMeanImage:
    """x - mean_image, on float images of the [0, 1] scale (He et al. 2016a's per-pixel mean subtraction).

    A class rather than a lambda so that DataLoader workers started by spawning can pickle it."""

    def __init__(self, mean_image: torch.Tensor) -> None:
        self.mean_image = mean_image

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean_image


def transforms(cfg: DataConfig, src: DataSource, train: bool) -> v2.Compose:
    """The papers' augmentation: crop (pad) + flip + optional RandAugment, then normalise: by the per-channel
    mean and std, or, where ``src.mean_image`` is set (``data.pixel_mean``), minus that mean image, after the
    crop and flip, so in the crop's coordinates (what the network sees)."""
    mean = list(cfg.mean) if cfg.mean is not None else list(src.mean)
    std = list(cfg.std) if cfg.std is not None else list(src.std)
    ops: list = [v2.PILToTensor()] if src.pil else []
    size = cfg.image_size or src.image_size
    if src.recipe == "imagenet":
        ops += (
            [v2.RandomResizedCrop(size, antialias=True)]
            if train
            else [v2.Resize(int(round(size / 0.875)), antialias=True), v2.CenterCrop(size)]
        )
    else:  # small images: every image at one side first (data.image_size), train and test alike
        if cfg.image_size is not None:
            ops.append(v2.Resize((size, size), antialias=True))
        if train:
            ops.append(v2.RandomCrop(size, padding=cfg.crop_padding or None))
    if train:
        if cfg.hflip:
            ops.append(v2.RandomHorizontalFlip())
        if cfg.randaugment:
            ops.append(v2.RandAugment(num_ops=cfg.randaugment_n, magnitude=cfg.randaugment_m))
    normalise = v2.Normalize(mean, std) if src.mean_image is None else SubtractMeanImage(src.mean_image)
    ops += [v2.ToDtype(torch.float32, scale=True), normalise]
    return v2.Compose(ops)


def check_normalisation(cfg: DataConfig, in_chans: int) -> None:
    """data.mean/data.std give one value per channel of the data set (known once it is found)."""
    for key in ("mean", "std"):
        values = getattr(cfg, key)
        if values is not None and len(values) != in_chans:
            raise ConfigError(
                f"data.{key}={list(values)} has {len(values)} value(s) but data={cfg.name} has "
                f"{in_chans} channel(s): give one per channel, or null for the data set's own"
            )


def check_pixel_mean(cfg: DataConfig) -> None:
    """``data.pixel_mean`` subtracts one mean image from every image the network sees, so every image must be
    on the data set's own pixel grid: no resize (``data.image_size``), no ImageNet recipe.  Judged from the
    data set's shape alone, before it loads (``data.mean``/``data.std``: :func:`nfbench.config.check_values`)."""
    if not cfg.pixel_mean:
        return
    if cfg.name == "imagenet":
        raise ConfigError(
            "data.pixel_mean=true is not available for data=imagenet: its random-resized crops have "
            "no fixed pixel grid to take a mean image on; set data.pixel_mean=false"
        )
    side = own_shape(cfg).image_size
    if cfg.image_size not in (None, side):
        raise ConfigError(
            f"data.pixel_mean=true needs data={cfg.name}'s own image size: data.image_size="
            f"{cfg.image_size} resizes its {side} px images, and the mean image is theirs; set "
            f"data.image_size=null, or data.pixel_mean=false"
        )


def mean_image(ds: Dataset, in_chans: int, side: int, chunk: int = 1024) -> torch.Tensor:
    """The mean of ``ds``'s uint8 images per pixel and channel, on the [0, 1] scale: (C, H, W) float32.

    Summed exactly (integers in float64), from memory for in-memory data sets, else by decoding every image
    once; an image that is not (in_chans, side, side) is a DataError (the mean image needs one pixel grid)."""
    held, indices = held_images(ds)
    total = torch.zeros(in_chans, side, side, dtype=torch.float64)
    if held is not None:
        index = torch.arange(len(held)) if indices is None else indices
        if tuple(held.images.shape[1:]) != tuple(total.shape):
            raise DataError(
                f"data.pixel_mean=true: the images are {tuple(held.images.shape[1:])}, not {tuple(total.shape)}"
            )
        for part in index.split(chunk):
            total += held.images[part].sum(0, dtype=torch.float64)
    else:
        for i in range(len(ds)):  # type: ignore[arg-type]
            x = ds[i][0]
            x = x if isinstance(x, torch.Tensor) else v2.functional.pil_to_tensor(x)
            if tuple(x.shape) != tuple(total.shape):
                raise DataError(
                    f"data.pixel_mean=true needs every training image at {side}x{side} px with "
                    f"{in_chans} channel(s); training image {i} is {tuple(x.shape)} (channels, height, "
                    f"width): resize the images, or set data.pixel_mean=false"
                )
            total += x
    return (total / (255.0 * len(ds))).float()  # type: ignore[arg-type]
