"""The data sets (``data=``): what each loads, its shape, and the in-memory form small sets take."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tvd
from torchvision.transforms import v2

from nfbench.config import DataConfig
from nfbench.data.folders import (
    FOLDER_LAYOUT,
    data_not_found,
    folder_splits,
    hold_in_memory,
    is_image_file,
    other_size,
    split_folder,
)
from nfbench.errors import DataError, DataNotFoundError
from nfbench.registry import Registry

log = logging.getLogger("nfbench")


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # docs/science.md#cifar-normalisation


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
    # Which pixels these are (nfbench.data.fingerprint): the digests of train and test as loaded, before any split.
    fingerprint: Optional[dict] = None
    # data.pixel_mean: the training images' mean (C, H, W), on the [0, 1] scale, subtracted from every image
    # in place of mean/std (He et al. 2016a); None: the per-channel mean and std normalise.
    mean_image: Optional[torch.Tensor] = None


class TensorImages(Dataset):
    """Images held in memory as a uint8 (N, C, H, W) tensor, with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Optional[Callable] = None) -> None:
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


@dataclass(frozen=True)
class DataShape:
    """What a data set feeds the model: classes, channels, image side."""

    num_classes: int
    in_chans: int
    image_size: int


@dataclass(frozen=True)
class DataSet:
    """A registered data set: the function that loads it, and its shape: a fixed one, or one read from the
    configured files without loading them (an image folder's tree), so that ``nfbench summary`` and
    ``nfbench.load_run`` know it without the data."""

    load: Callable[[DataConfig], DataSource]
    shape: DataShape | Callable[[DataConfig], DataShape]

    def shape_of(self, cfg: DataConfig) -> DataShape:
        return self.shape(cfg) if callable(self.shape) else self.shape


DATASETS: Registry[DataSet] = Registry("data set")


def register_dataset(
    name: str, shape: DataShape | Callable[[DataConfig], DataShape]
) -> Callable[[Callable[[DataConfig], DataSource]], Callable[[DataConfig], DataSource]]:
    """Register the decorated ``load(cfg: DataConfig) -> DataSource`` as ``data=name``, with its ``shape``
    (docs/extending.md, "A new data set"): a fixed :class:`DataShape`, or a function of the config."""

    def add(load: Callable[[DataConfig], DataSource]) -> Callable[[DataConfig], DataSource]:
        DATASETS.register(name)(DataSet(load, shape))
        return load

    return add


def folder_shape(cfg: DataConfig) -> DataShape:
    """An image folder's shape, from its tree alone: the class folders of train/ and the first image's bands
    and size (files that are not images left out, with a note)."""
    from PIL import Image

    train = split_folder(Path(cfg.root).expanduser(), ["train"])
    classes, _ = tvd.folder.find_classes(str(train))
    files = sorted(p for p in (train / classes[0]).iterdir() if p.is_file())
    first = next((p for p in files if is_image_file(str(p))), None)
    if first is None:
        raise DataNotFoundError(f"image folder {train / classes[0]} holds no image file; {FOLDER_LAYOUT}")
    if first != files[0]:
        log.info("image folder %s: left out the files that are not images, e.g. %s", train / classes[0], files[0].name)
    with Image.open(first) as img:
        return DataShape(len(classes), len(img.getbands()), max(img.size))


@register_dataset("digits", DataShape(10, 1, 8))
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
    return DataSource(
        TensorImages(images[train_idx], labels[train_idx]),
        TensorImages(images[test_idx], labels[test_idx]),
        num_classes=10,
        in_chans=1,
        image_size=8,
        mean=mean,
        std=std,
    )


def _release_reader(cls: type[tvd.CIFAR10], name: str, train: bool) -> type[tvd.CIFAR10]:
    """torchvision's reader ``cls`` (CIFAR10 or CIFAR100) for one file of the python release, with the md5
    checks off: torchvision compares every file with the official release's md5 and refuses any other, so
    the release as scripts/cifar_from_images.py writes it could not be read.  The reading is torchvision's
    unchanged (``check_integrity(path, None)``: the file exists); one file at a time, so that a damaged one
    is named."""
    entry = [[name, None]]
    return type(
        f"{cls.__name__}File",
        (cls,),
        {"train_list": entry if train else [], "test_list": [] if train else entry, "meta": {**cls.meta, "md5": None}},
    )


def _read_release(
    cls: type[tvd.CIFAR10], root: Path, names: Sequence[str], train: bool
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The images (uint8 N x 3 x 32 x 32, the files' order), labels and class names of ``names``."""
    images, labels, classes = [], [], []
    for name in names:
        path = root / cls.base_folder / name
        try:
            part = _release_reader(cls, name, train)(str(root), train=train, download=False)
        except Exception as e:  # truncated, another pickle, another format: the same fix
            why = " ".join(f"{type(e).__name__}: {e}".split())
            label_key = "fine_labels" if cls is tvd.CIFAR100 else "labels"
            raise DataError(
                f"{path} is truncated or not a CIFAR python batch ({why}; a batch holds 'data' and "
                f"{label_key!r}). Fix: delete {path.parent} and run once with data.download=true to "
                f"download it again"
            ) from e
        images.append(torch.from_numpy(part.data).permute(0, 3, 1, 2))
        labels.extend(part.targets)
        classes = part.classes
    return torch.cat(images).contiguous(), torch.tensor(labels, dtype=torch.int64), classes


def _cifar(cfg: DataConfig, cls: type[tvd.CIFAR10], mean: Sequence[float], std: Sequence[float]) -> DataSource:
    """CIFAR-10 or CIFAR-100, the python release in ``data.root`` (downloaded there with ``data.download``),
    read by torchvision's own CIFAR10/CIFAR100 code."""
    root = Path(cfg.root).expanduser()
    folder = root / cls.base_folder
    train_files, test_files = [n for n, _ in cls.train_list], [n for n, _ in cls.test_list]
    if not all((folder / f).is_file() for f in (*train_files, *test_files, cls.meta["filename"])):
        if not cfg.download:
            raise data_not_found(cls.__name__, folder, "data.download=false")
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        except Exception as e:  # no network, proxy, disk full: all end the same way for the user
            raise data_not_found(cls.__name__, folder, f"download failed: {type(e).__name__}: {e}") from e
    xtr, ytr, classes = _read_release(cls, root, train_files, train=True)
    xte, yte, _ = _read_release(cls, root, test_files, train=False)
    return DataSource(
        TensorImages(xtr, ytr),
        TensorImages(xte, yte),
        num_classes=len(classes),
        in_chans=3,
        image_size=32,
        mean=mean,
        std=std,
        classes=list(classes),
    )


@register_dataset("cifar10", DataShape(10, 3, 32))
def cifar10(cfg: DataConfig) -> DataSource:
    return _cifar(cfg, tvd.CIFAR10, CIFAR_MEAN, CIFAR_STD)


@register_dataset("cifar100", DataShape(100, 3, 32))
def cifar100(cfg: DataConfig) -> DataSource:
    return _cifar(cfg, tvd.CIFAR100, CIFAR100_MEAN, CIFAR100_STD)


def _channel_stats(image: Callable[[int], torch.Tensor], n: int, sample: int = 512) -> tuple[list[float], list[float]]:
    """Mean and std per channel over every pixel of a fixed sample of up to ``sample`` of the n uint8 images
    ``image(i)`` (of any sizes)."""
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))[:sample]
    pixels = torch.cat([image(int(i)).flatten(1) for i in idx], dim=1)
    xs = v2.functional.to_dtype(pixels, torch.float32, scale=True)
    return xs.mean(dim=1).tolist(), xs.std(dim=1).tolist()


@register_dataset("imagefolder", folder_shape)
def imagefolder(cfg: DataConfig) -> DataSource:
    """Any tree ROOT/{train,test|val}/<class>/<image> of same-size small images (e.g. CIFAR-10 as JPEGs).

    Held in memory as uint8 tensors, as CIFAR is, when ``data.on_device`` may serve it and it is small
    (nfbench/data/folders.py); read from its files otherwise."""
    root = Path(cfg.root).expanduser()
    train, test, sizes = folder_splits(root, ["test", "val"], cfg)
    first = train[0][0]
    w, h = first.size
    if cfg.image_size is None:  # data.verify read every header: each image must be the first's size
        _same_size(sizes or {}, (w, h))
    shape = dict(
        num_classes=len(train.classes),
        in_chans=len(first.getbands()),
        image_size=max(w, h),
        classes=list(train.classes),
    )
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


def _imagenet_shape(cfg: DataConfig) -> DataShape:
    """ILSVRC-2012's 1,000 classes at 224 px; a tree at ``data.root`` gives its own class count (a subset)."""
    if (Path(cfg.root).expanduser() / "train").is_dir():
        return DataShape(folder_shape(cfg).num_classes, 3, 224)
    return DataShape(1000, 3, 224)


@register_dataset("imagenet", _imagenet_shape)
def imagenet(cfg: DataConfig) -> DataSource:
    """ILSVRC-2012 as an ImageFolder tree ROOT/train, ROOT/val; the standard 224 px recipe."""
    root = Path(cfg.root).expanduser()
    train, test, _ = folder_splits(root, ["val", "test"], cfg)
    return DataSource(
        train,
        test,
        num_classes=len(train.classes),
        in_chans=3,
        image_size=cfg.image_size or 224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        recipe="imagenet",
        pil=True,
        classes=list(train.classes),
    )


def own_shape(cfg: DataConfig) -> DataShape:
    """The configured data set's own shape, without loading it (:class:`DataSet`)."""
    return DATASETS.get(cfg.name).shape_of(cfg)


def data_shape(cfg: DataConfig) -> DataShape:
    """The configured data set's shape without loading it (``data.image_size`` overrides the side)."""
    shape = own_shape(cfg)
    return DataShape(shape.num_classes, shape.in_chans, cfg.image_size or shape.image_size)
