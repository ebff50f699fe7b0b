"""Data sets (``data=``) and their loaders.

Small data sets (digits, CIFAR, small image folders) are held in memory as a
uint8 tensor; other folder trees are read with torchvision's ImageFolder.  Augmentation follows the
papers' recipe: random crop with padding + horizontal flip (+ RandAugment),
then normalisation (per channel, or with ``data.pixel_mean`` He et al. 2016a's mean image of the
training images); the test set and the validation split held out of the
training set (``data.val_size``) are only normalised.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
from dataclasses import dataclass, replace
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tvd
from torchvision.transforms import v2

from nfbench.config import DataConfig
from nfbench.datacheck import check_images, other_size
from nfbench.errors import ConfigError, DataError, DataNotFoundError
from nfbench.folder_memory import hold_in_memory
from nfbench.registry import Registry

log = logging.getLogger("nfbench")

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # SPEC section 4
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Fixed permutation seed for splits and subsets, independent of the run's seed,
# so every run of a sweep sees the same images.
SPLIT_SEED = 0


@dataclass
class DataSource:
    """What a data set provides before transforms are attached."""

    train: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    # "small": pad-crop + flip at native size; "imagenet": random-resized crop / centre crop.
    recipe: str = "small"
    # Samples arrive as PIL images (folders) rather than uint8 CHW tensors.
    pil: bool = False
    # Held out of the training set for model selection (data.val_size); None without one.
    val: Optional[Dataset] = None
    # The class names in label order, where the data set has them (image folders: the folder names).
    classes: Optional[list[str]] = None
    # Which pixels these are (nfbench.fingerprint): the digests of train and test as loaded, before any split.
    fingerprint: Optional[dict] = None
    # data.pixel_mean: the training images' mean (C, H, W), on the [0, 1] scale, subtracted from every image
    # in place of mean/std (He et al. 2016a); None: the per-channel mean and std normalise.
    mean_image: Optional[torch.Tensor] = None


class TensorImages(Dataset):
    """Images held in memory as a uint8 (N, C, H, W) tensor, with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 transform: Optional[Callable] = None) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4 and len(images) == len(labels)
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


class TransformedFolder(Dataset):
    """An ImageFolder (or a Subset of one) with a transform chosen after construction."""

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        img, y = self.base[i]
        return self.transform(img), y


def held_images(ds: Dataset) -> tuple[Optional[TensorImages], Optional[torch.Tensor]]:
    """The in-memory data set behind a data set built by ``build_source`` and the indices of it that
    ``ds`` selects (None: all of it); (None, None) for one that reads files.  Nothing is copied."""
    if isinstance(ds, TransformedFolder):
        ds = ds.base
    indices = None
    while isinstance(ds, Subset):  # a training subset of what the validation split left, say
        outer = torch.as_tensor(ds.indices)
        indices, ds = (outer if indices is None else outer[indices]), ds.dataset
    return (ds, indices) if isinstance(ds, TensorImages) else (None, None)


DATASETS: Registry[Callable[[DataConfig], DataSource]] = Registry("data set")


@DATASETS.register("digits")
def digits(cfg: DataConfig) -> DataSource:
    """scikit-learn's 8x8 handwritten digits (UCI, 1,797 images), shipped inside the package.

    A real data set that needs no download, for the quick start and tests.
    Split 80/20 with a fixed permutation: 1,438 train / 359 test images (359 = 1,797 // 5).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = len(labels) // 5
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    mean, std = (0.3063,), (0.3785,)  # of the 1,797 images scaled to [0, 1]
    return DataSource(TensorImages(images[train_idx], labels[train_idx]),
                      TensorImages(images[test_idx], labels[test_idx]),
                      num_classes=10, in_chans=1, image_size=8, mean=mean, std=std)


def _missing(what: str, where: Path, why: str, downloadable: bool = True) -> DataNotFoundError:
    """Where a data set was looked for and the fixes; ``data.download`` only where it can fetch the files."""
    download = ", or run once with data.download=true on a machine with internet access" if downloadable else ""
    return DataNotFoundError(
        f"{what} not found in {where} ({why}). Fix: put the files there, or point data.root "
        f"(or the NFBENCH_DATA environment variable) at the folder that holds them{download}."
    )


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, list[int]]:
    """One python-pickle batch of the official CIFAR release; a damaged file is named, with the fix."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        missing = [k for k in ("data", label_key) if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"no {' or '.join(map(repr, missing))} entry")
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = [int(y) for y in entry[label_key]]
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    except Exception as e:  # truncated, another pickle, another format: the same fix
        why = " ".join(f"{type(e).__name__}: {e}".split())
        raise DataError(f"{path} is truncated or not a CIFAR python batch ({why}). Fix: delete {path.parent} "
                        f"and run once with data.download=true to download it again") from e
    return images, labels


def _read_cifar_batches(folder: Path, files: Sequence[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the python-pickle batches of the official CIFAR release (what torchvision downloads)."""
    images, labels = [], []
    for name in files:
        x, y = _read_cifar_batch(folder / name, label_key)
        images.append(x)
        labels.extend(y)
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


def _cifar(cfg: DataConfig, tv_cls: type, train_files: Sequence[str], test_file: str,
           label_key: str, num_classes: int, mean, std) -> DataSource:
    root = Path(cfg.root).expanduser()
    folder = root / tv_cls.base_folder
    needed = [*train_files, test_file]
    if not all((folder / f).is_file() for f in needed):
        if not cfg.download:
            raise _missing(tv_cls.__name__, folder, "data.download=false")
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(tv_cls.url, str(root), filename=tv_cls.filename, md5=tv_cls.tgz_md5)
        except Exception as e:  # no network, proxy, disk full: all end the same way for the user
            raise _missing(tv_cls.__name__, folder, f"download failed: {type(e).__name__}: {e}") from e
    xtr, ytr = _read_cifar_batches(folder, train_files, label_key)
    xte, yte = _read_cifar_batches(folder, [test_file], label_key)
    return DataSource(TensorImages(xtr, ytr), TensorImages(xte, yte), num_classes=num_classes,
                      in_chans=3, image_size=32, mean=mean, std=std)


@DATASETS.register("cifar10")
def cifar10(cfg: DataConfig) -> DataSource:
    files = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar(cfg, tvd.CIFAR10, files, "test_batch", "labels", 10, CIFAR_MEAN, CIFAR_STD)


@DATASETS.register("cifar100")
def cifar100(cfg: DataConfig) -> DataSource:
    return _cifar(cfg, tvd.CIFAR100, ["train"], "test", "fine_labels", 100, CIFAR100_MEAN, CIFAR100_STD)


FOLDER_LAYOUT = "expected ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg (or val/)"


def _folder_split(root: Path, names: Sequence[str]) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise _missing(f"an image folder ({' or '.join(n + '/' for n in names)})", root, FOLDER_LAYOUT,
                   downloadable=False)


def _unreadable(root: Path, path: str) -> DataError:
    return DataError(f"image folder {root}: cannot read {path} (permission denied). Fix: make it readable "
                     f"(chmod -R u+rX {root}), or point data.root at a copy you can read")


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


def _image_folder(root: Path, names: Sequence[str], cfg: DataConfig
                  ) -> tuple[tvd.ImageFolder, Optional[dict[str, tuple[int, int]]]]:
    """The first split folder of ``names`` under ``root``, every file checked (``data.verify``)
    before any is decoded, so a damaged one is named before training starts.  A folder that cannot
    be listed, or holds no class folders or no images, is one line naming it; files that are not
    images are left out, as ImageFolder does, with a note.  Returns the folder and, when checked, every
    image's size (W, H) as its header gives it."""
    others = _NotImages()
    try:
        split = _folder_split(root, names)
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
        raise DataNotFoundError(f"image folder {split} holds no images to use ({' '.join(str(e).split())}); "
                                f"{FOLDER_LAYOUT}. Fix: put the images there, or point data.root at the folder "
                                f"that holds them") from None
    if others.skipped:
        log.info("image folder %s: left out %d file(s) that are not images, e.g. %s", split, len(others.skipped),
                 others.skipped[0])
    return folder, check_images(folder, cfg.skip_corrupt) if cfg.verify else None


def folder_splits(root: Path, test_names: Sequence[str], cfg: DataConfig
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
        what = "; ".join([*([f"{split}/ lacks {', '.join(map(repr, missing))} that train/ has"] if missing else []),
                          *([f"{split}/ has {', '.join(map(repr, extra))} that train/ lacks"] if extra else [])])
        raise DataError(f"image folder {root}: train/ and {split}/ hold different classes ({what}), so their labels "
                        f"would not match. Fix: give both the same class folders")
    sizes = None if train_sizes is None or test_sizes is None else {**train_sizes, **test_sizes}
    return train, test, sizes


def _channel_stats(image: Callable[[int], torch.Tensor], n: int,
                   sample: int = 512) -> tuple[list[float], list[float]]:
    """Mean and std per channel over every pixel of a fixed sample of up to ``sample`` of the n uint8 images
    ``image(i)`` (of any sizes)."""
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))[:sample]
    pixels = torch.cat([image(int(i)).flatten(1) for i in idx], dim=1)
    xs = v2.functional.to_dtype(pixels, torch.float32, scale=True)
    return xs.mean(dim=1).tolist(), xs.std(dim=1).tolist()


@DATASETS.register("imagefolder")
def imagefolder(cfg: DataConfig) -> DataSource:
    """Any tree ROOT/{train,test|val}/<class>/<image> of same-size small images (e.g. CIFAR-10 as JPEGs).

    Held in memory as uint8 tensors, as CIFAR is, when ``data.on_device`` may serve it and it is small
    (nfbench/folder_memory.py); read from its files otherwise."""
    root = Path(cfg.root).expanduser()
    train, test, sizes = folder_splits(root, ["test", "val"], cfg)
    first = train[0][0]
    w, h = first.size
    if cfg.image_size is None:  # data.verify read every header: each image must be the first's size
        _same_size(sizes or {}, (w, h))
    shape = dict(num_classes=len(train.classes), in_chans=len(first.getbands()), image_size=max(w, h),
                 classes=list(train.classes))
    held = hold_in_memory(cfg, [train, test], (h, w))
    if held is None:
        mean, std = _channel_stats(lambda i: v2.functional.pil_to_tensor(train[i][0]), len(train))
        return DataSource(train, test, **shape, mean=mean, std=std, pil=True)
    (train_x, train_y), (test_x, test_y) = held
    mean, std = _channel_stats(lambda i: train_x[i], len(train_x))
    return DataSource(TensorImages(train_x, train_y), TensorImages(test_x, test_y), **shape, mean=mean, std=std)


def _same_size(sizes: dict[str, tuple[int, int]], size: tuple[int, int]) -> None:
    """Refuse an image folder of small images whose images are not all ``size`` (W, H), naming the first other
    one, before any training step: its batches could not be stacked (the first evaluation would fail).  The
    sizes are the headers ``data.verify`` read; without it the decode into memory finds such an image."""
    for path, other in sizes.items():
        if other != size:
            raise other_size(path, other, size)



@DATASETS.register("imagenet")
def imagenet(cfg: DataConfig) -> DataSource:
    """ILSVRC-2012 as an ImageFolder tree ROOT/train, ROOT/val; the standard 224 px recipe."""
    root = Path(cfg.root).expanduser()
    train, test, _ = folder_splits(root, ["val", "test"], cfg)
    return DataSource(train, test, num_classes=len(train.classes), in_chans=3,
                      image_size=cfg.image_size or 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      recipe="imagenet", pil=True, classes=list(train.classes))


@dataclass(frozen=True)
class DataShape:
    """What a data set feeds the model: classes, channels, image side."""

    num_classes: int
    in_chans: int
    image_size: int


# The shapes the loaders above produce, known without reading any file (``nfbench summary``).
SHAPES = {
    "digits": DataShape(10, 1, 8),
    "cifar10": DataShape(10, 3, 32),
    "cifar100": DataShape(100, 3, 32),
    "imagenet": DataShape(1000, 3, 224),
}


def _own_shape(cfg: DataConfig) -> DataShape:
    """The data set's own shape, without loading it: an image folder's is in its tree (the class folders of
    train/ and the first image's size)."""
    if cfg.name in SHAPES:
        return SHAPES[cfg.name]
    DATASETS.get(cfg.name)
    from PIL import Image

    train = _folder_split(Path(cfg.root).expanduser(), ["train"])
    classes, _ = tvd.folder.find_classes(str(train))
    files = sorted(p for p in (train / classes[0]).iterdir() if p.is_file())
    first = next((p for p in files if is_image_file(str(p))), None)
    if first is None:
        raise DataNotFoundError(f"image folder {train / classes[0]} holds no image file; {FOLDER_LAYOUT}")
    if first != files[0]:
        log.info("image folder %s: left out the files that are not images, e.g. %s", train / classes[0],
                 files[0].name)
    with Image.open(first) as img:
        return DataShape(len(classes), len(img.getbands()), max(img.size))


def data_shape(cfg: DataConfig) -> DataShape:
    """The configured data set's shape without loading it (``data.image_size`` overrides the side)."""
    shape = _own_shape(cfg)
    return DataShape(shape.num_classes, shape.in_chans, cfg.image_size or shape.image_size)


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
        ops += [v2.RandomResizedCrop(size, antialias=True)] if train else \
               [v2.Resize(int(round(size / 0.875)), antialias=True), v2.CenterCrop(size)]
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


def _subset(ds: Dataset, n: Optional[int]) -> Dataset:
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
        raise ConfigError(f"{key} holds out no image of data={name}'s {n} training images: give a larger "
                          f"fraction, or a number of images")
    if n_val >= n:
        raise ConfigError(f"{key} holds out {n_val} images of data={name}'s {n} training images, leaving none "
                          f"to train on: hold out fewer")
    try:
        train_idx, val_idx = train_test_split(np.arange(n), test_size=n_val, random_state=SPLIT_SEED,
                                              stratify=_labels(ds))
    except ValueError as e:  # a per-class split needs at least one image of each class on either side
        raise ConfigError(f"{key}: no per-class split of {n_val} of data={name}'s {n} training images "
                          f"({' '.join(str(e).split())}); hold out more, or fewer") from e
    return Subset(ds, sorted(train_idx.tolist())), Subset(ds, sorted(val_idx.tolist()))


def with_transform(ds: Dataset, transform: Callable) -> Dataset:
    if isinstance(ds, TensorImages):
        return TensorImages(ds.images, ds.labels, transform)
    return TransformedFolder(ds, transform)


def check_normalisation(cfg: DataConfig, in_chans: int) -> None:
    """data.mean/data.std give one value per channel of the data set (known once it is found)."""
    for key in ("mean", "std"):
        values = getattr(cfg, key)
        if values is not None and len(values) != in_chans:
            raise ConfigError(f"data.{key}={list(values)} has {len(values)} value(s) but data={cfg.name} has "
                              f"{in_chans} channel(s): give one per channel, or null for the data set's own")


def check_pixel_mean(cfg: DataConfig) -> None:
    """``data.pixel_mean`` subtracts one mean image from every image the network sees, so every image must be
    on the data set's own pixel grid: no resize (``data.image_size``), no ImageNet recipe.  Judged from the
    data set's shape alone, before it loads (``data.mean``/``data.std``: :func:`nfbench.config.check_values`)."""
    if not cfg.pixel_mean:
        return
    if cfg.name == "imagenet":
        raise ConfigError("data.pixel_mean=true is not available for data=imagenet: its random-resized crops have "
                          "no fixed pixel grid to take a mean image on; set data.pixel_mean=false")
    side = _own_shape(cfg).image_size
    if cfg.image_size not in (None, side):
        raise ConfigError(f"data.pixel_mean=true needs data={cfg.name}'s own image size: data.image_size="
                          f"{cfg.image_size} resizes its {side} px images, and the mean image is theirs; set "
                          f"data.image_size=null, or data.pixel_mean=false")


def mean_image(ds: Dataset, in_chans: int, side: int, chunk: int = 1024) -> torch.Tensor:
    """The mean of ``ds``'s uint8 images per pixel and channel, on the [0, 1] scale: (C, H, W) float32.

    Summed exactly (integers in float64), from memory for in-memory data sets, else by decoding every image
    once; an image that is not (in_chans, side, side) is a DataError (the mean image needs one pixel grid)."""
    held, indices = held_images(ds)
    total = torch.zeros(in_chans, side, side, dtype=torch.float64)
    if held is not None:
        index = torch.arange(len(held)) if indices is None else indices
        if tuple(held.images.shape[1:]) != tuple(total.shape):
            raise DataError(f"data.pixel_mean=true: the images are {tuple(held.images.shape[1:])}, not "
                            f"{tuple(total.shape)}")
        for part in index.split(chunk):
            total += held.images[part].sum(0, dtype=torch.float64)
    else:
        for i in range(len(ds)):  # type: ignore[arg-type]
            x = ds[i][0]
            x = x if isinstance(x, torch.Tensor) else v2.functional.pil_to_tensor(x)
            if tuple(x.shape) != tuple(total.shape):
                raise DataError(f"data.pixel_mean=true needs every training image at {side}x{side} px with "
                                f"{in_chans} channel(s); training image {i} is {tuple(x.shape)} (channels, height, "
                                f"width): resize the images, or set data.pixel_mean=false")
            total += x
    return (total / (255.0 * len(ds))).float()  # type: ignore[arg-type]


def build_source(cfg: DataConfig) -> DataSource:
    """Load the configured data set, its validation split, its subsets and its transforms.

    The validation split is held out of the whole training set first; ``data.train_subset`` then
    subsets what remains, so a smaller subset trains on fewer images against the same hold-out.
    With ``data.pixel_mean`` the mean image is taken over exactly the images trained on (those two
    steps done), and subtracted from the training, validation and test images alike."""
    check_pixel_mean(cfg)
    src = DATASETS.get(cfg.name)(cfg)
    fingerprint = data_fingerprint(src)
    check_normalisation(cfg, src.in_chans)
    if src.recipe == "small" and cfg.image_size is not None and cfg.image_size > src.image_size:
        raise ConfigError(f"data.image_size={cfg.image_size} is larger than data={cfg.name}'s {src.image_size} px images: "
                          f"the small-image recipe resizes down, never up. Fix: leave data.image_size unset, or give "
                          f"at most {src.image_size}")
    train, val = (src.train, None) if cfg.val_size is None else split_validation(src.train, cfg.val_size, cfg.name)
    train = _subset(train, cfg.train_subset)
    if cfg.pixel_mean:
        src = replace(src, mean_image=mean_image(train, src.in_chans, src.image_size))
    evaluation = transforms(cfg, src, train=False)
    train = with_transform(train, transforms(cfg, src, train=True))
    test = with_transform(_subset(src.test, cfg.test_subset), evaluation)
    size = cfg.image_size or src.image_size
    return DataSource(train, test, src.num_classes, src.in_chans, size, cfg.mean or src.mean, cfg.std or src.std,
                      src.recipe, src.pil, val=None if val is None else with_transform(val, evaluation),
                      classes=src.classes, fingerprint=fingerprint, mean_image=src.mean_image)


def data_fingerprint(src: DataSource) -> dict:
    """The sha256 of the training and the test images as the data set loaded them, in stored order, before
    any validation split or subset (:func:`nfbench.fingerprint.pixels_sha256`: the data README's digest of
    CIFAR-10's original pixels is what ``data=cifar10`` gives for them); for an image folder read from its
    files, the digest of its file listing (kind "files")."""
    from nfbench.fingerprint import files_sha256, pixels_sha256

    def digest(ds: Dataset) -> tuple[str, str]:
        if isinstance(ds, TensorImages):
            return "pixels", pixels_sha256(ds.images)
        return "files", files_sha256((path for path, _ in ds.samples), ds.root)  # type: ignore[attr-defined]

    (kind, train), (_, test) = digest(src.train), digest(src.test)
    return {"kind": kind, "train": train, "test": test}


def identity(src: DataSource) -> dict:
    """What a run trains on, as its checkpoints record it: a resume on other data is refused
    (:func:`nfbench.rundir.check_data`)."""
    return {"num_classes": src.num_classes, "in_chans": src.in_chans, "image_size": src.image_size,
            "classes": src.classes, "fingerprint": src.fingerprint}


def worker_context() -> BaseContext:
    """How DataLoader workers start: the platform's default method, named explicitly.

    Left implicit, workers inherit the current default, and a job that Hydra's joblib launcher
    (``hydra/launcher=parallel``) runs in a loky process has loky's, whose processes DataLoader
    cannot start.
    """
    return multiprocessing.get_context(multiprocessing.get_all_start_methods()[0])
