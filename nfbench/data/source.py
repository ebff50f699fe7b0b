"""A configured data set made ready to train: loaded, fingerprinted, split, subset, transformed."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from multiprocessing.context import BaseContext
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tvd

from nfbench.config import DataConfig
from nfbench.data.sets import DATASETS, SPLIT_SEED, DataSource, TensorImages, TransformedFolder
from nfbench.data.transforms import check_normalisation, check_pixel_mean, mean_image, transforms
from nfbench.errors import ConfigError


def subset(ds: Dataset, n: Optional[int]) -> Dataset:
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(SPLIT_SEED))[:n]  # type: ignore[arg-type]
    return Subset(ds, sorted(idx.tolist()))


def _labels(ds: Dataset) -> Optional[np.ndarray]:
    """Every sample's class where the data set knows them without decoding an image, else None."""
    if isinstance(ds, TensorImages):
        return ds.labels.numpy()
    if isinstance(ds, tvd.DatasetFolder):
        return np.asarray(ds.targets)
    if isinstance(ds, Subset):
        labels = _labels(ds.dataset)
        return None if labels is None else labels[np.asarray(ds.indices)]
    return None


def split_validation(ds: Dataset, val_size: int | float, name: str) -> tuple[Subset, Subset]:
    """(training, validation) parts of ``ds`` for ``data.val_size`` (a count, or a fraction rounded to
    the nearest image).  Per class when the labels are known (scikit-learn's stratified split: each
    class gives its share, remainders to the largest fractions), drawn with ``SPLIT_SEED`` alone so
    that every run of a sweep holds out the same images.  A size the data cannot give is a ConfigError."""
    from sklearn.model_selection import train_test_split

    n = len(ds)  # type: ignore[arg-type]
    n_val = val_size if isinstance(val_size, int) else int(val_size * n + 0.5)
    key = f"data.val_size={val_size}"
    if n_val < 1:
        raise ConfigError(
            f"{key} holds out no image of data={name}'s {n} training images: give a larger "
            f"fraction, or a number of images"
        )
    if n_val >= n:
        raise ConfigError(
            f"{key} holds out {n_val} images of data={name}'s {n} training images, leaving none "
            f"to train on: hold out fewer"
        )
    try:
        train_idx, val_idx = train_test_split(
            np.arange(n), test_size=n_val, random_state=SPLIT_SEED, stratify=_labels(ds)
        )
    except ValueError as e:  # a per-class split needs at least one image of each class on either side
        raise ConfigError(
            f"{key}: no per-class split of {n_val} of data={name}'s {n} training images "
            f"({' '.join(str(e).split())}); hold out more, or fewer"
        ) from e
    return Subset(ds, sorted(train_idx.tolist())), Subset(ds, sorted(val_idx.tolist()))


def with_transform(ds: Dataset, transform: Callable) -> Dataset:
    if isinstance(ds, TensorImages):
        return TensorImages(ds.images, ds.labels, transform)
    return TransformedFolder(ds, transform)


def build_source(cfg: DataConfig) -> DataSource:
    """Load the configured data set, its validation split, its subsets and its transforms.

    The validation split is held out of the whole training set first; ``data.train_subset`` then
    subsets what remains, so a smaller subset trains on fewer images against the same hold-out.
    With ``data.pixel_mean`` the mean image is taken over exactly the images trained on (those two
    steps done), and subtracted from the training, validation and test images alike."""
    check_pixel_mean(cfg)
    src = DATASETS.get(cfg.name).load(cfg)
    fingerprint = data_fingerprint(src)
    check_normalisation(cfg, src.in_chans)
    if src.recipe == "small" and cfg.image_size is not None and cfg.image_size > src.image_size:
        raise ConfigError(
            f"data.image_size={cfg.image_size} is larger than data={cfg.name}'s {src.image_size} px images: "
            f"the small-image recipe resizes down, never up. Fix: leave data.image_size unset, or give "
            f"at most {src.image_size}"
        )
    train, val = (src.train, None) if cfg.val_size is None else split_validation(src.train, cfg.val_size, cfg.name)
    train = subset(train, cfg.train_subset)
    if cfg.pixel_mean:
        src = replace(src, mean_image=mean_image(train, src.in_chans, src.image_size))
    evaluation = transforms(cfg, src, train=False)
    train = with_transform(train, transforms(cfg, src, train=True))
    test = with_transform(subset(src.test, cfg.test_subset), evaluation)
    size = cfg.image_size or src.image_size
    return DataSource(
        train,
        test,
        src.num_classes,
        src.in_chans,
        size,
        cfg.mean or src.mean,
        cfg.std or src.std,
        src.recipe,
        src.pil,
        val=None if val is None else with_transform(val, evaluation),
        classes=src.classes,
        fingerprint=fingerprint,
        mean_image=src.mean_image,
    )


def data_fingerprint(src: DataSource) -> dict:
    """The sha256 of the training and the test images as the data set loaded them, in stored order, before
    any validation split or subset (:func:`nfbench.data.fingerprint.pixels_sha256`: the data README's digest of
    CIFAR-10's original pixels is what ``data=cifar10`` gives for them); for an image folder read from its
    files, the digest of its file listing (kind "files")."""
    from nfbench.data.fingerprint import files_sha256, pixels_sha256

    def digest(ds: Dataset) -> tuple[str, str]:
        if isinstance(ds, TensorImages):
            return "pixels", pixels_sha256(ds.images)
        return "files", files_sha256((path for path, _ in ds.samples), ds.root)  # type: ignore[attr-defined]

    (kind, train), (_, test) = digest(src.train), digest(src.test)
    return {"kind": kind, "train": train, "test": test}


def identity(src: DataSource, decode: Optional[str] = None) -> dict:
    """What a run trains on, as its checkpoints record it: a resume on other data is refused
    (:func:`nfbench.rundir.check_data`), and so is one that would decode its images elsewhere (``decode``:
    ``data.decode`` as it resolved, :func:`nfbench.data.gpu_decode.decode_choice`; recorded where it applies)."""
    found = {
        "num_classes": src.num_classes,
        "in_chans": src.in_chans,
        "image_size": src.image_size,
        "classes": src.classes,
        "fingerprint": src.fingerprint,
    }
    return found if decode is None else {**found, "decode": decode}


def worker_context() -> BaseContext:
    """How DataLoader workers start: the platform's default method, named explicitly.

    Left implicit, workers inherit the current default, and a job that Hydra's joblib launcher
    (``hydra/launcher=parallel``) runs in a loky process has loky's, whose processes DataLoader
    cannot start.
    """
    return multiprocessing.get_context(multiprocessing.get_all_start_methods()[0])
