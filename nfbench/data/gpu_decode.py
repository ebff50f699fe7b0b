"""``data.decode=gpu``: ImageNet's JPEG files decoded, cropped, resized, flipped and normalised a batch at a
time on the training device, where the DataLoader path (``data.decode=cpu``) does all of it per image in
worker processes.

The work is split so that the workers do what is cheap and per file, the training device what is dear:

- **Workers** (:class:`EncodedImages`, ``data.num_workers`` of them) read each file's bytes and its header
  (PIL reads the size and mode without decoding), and draw the sample's crop box and flip from a generator
  seeded by the sample's own seed: the (seed, epoch, index) seed of :class:`nfbench.data.loaders.SeededSampler`,
  as on the CPU path, so a resumed run sees the same boxes and flips whichever worker built them.  A batch
  travels to the training process as one byte buffer (:class:`EncodedBatch`).  A file that is not a JPEG
  (ImageNet has one PNG named .JPEG) or a JPEG that is not grey or YCbCr (ImageNet's 22 CMYK files) is
  decoded by PIL in the worker, ``convert("RGB")`` as torchvision's ImageFolder does, and travels as pixels.
- **The training device** (:class:`BatchDecoder`) decodes the batch's JPEGs in one call,
  ``torchvision.io.decode_jpeg(list, mode=ImageReadMode.RGB, device=...)`` (nvJPEG on CUDA; grey images come
  out with three equal channels, as PIL's ``convert("RGB")`` gives them), and crops and resizes every image
  in one ``torchvision.ops.roi_align`` (:func:`resized_crops`), then flips and normalises.  Should the batched
  decode refuse the batch (it returns nothing when one image fails), each image is decoded alone and those it
  refuses go to PIL, with a log line naming the file.

**Why roi_align.**  A batch of ImageNet photographs has as many sizes as images, and each training sample a
box of its own.  roi_align takes one (N, C, H, W) tensor and a box per sample, and its cost is the output's
(N x 224 x 224 bins, a few bilinear samples each), whatever the input size; padded images cost only memory.
With ``aligned=True`` it samples on the half-pixel grid that ``F.interpolate(align_corners=False)`` uses, and
with ``sampling_ratio=-1`` each output pixel averages ceil(box side / 224) x ceil(...) bilinear samples spread
over its bin: a box filter as wide as one output pixel, which is its anti-aliasing when the box is larger than
the output.  torchvision's ``antialias=True`` resize (what the CPU path uses) weights its inputs with a triangle
twice that wide, so roi_align's crops are a little sharper (more aliasing) when they shrink an image and the
same bilinear interpolation when they enlarge one.  One more difference: roi_align samples the photograph, so
a crop's outermost output pixels blend in the pixels just outside its box, where torchvision, which crops
before it resizes, repeats the box's edge.  On the 120 sample photographs (tests/test_gpu_decode.py) the
training crops differ from the CPU path's by 0.64 grey levels on average (at most 46, at sharp edges), the
evaluation crops by 0.71 (at most 54); a batched ``grid_sample`` (plain bilinear, no anti-aliasing at all)
would differ by 1.36 and 2.00 (at most 137).  The exact triangle filter, as two batched matrix products,
costs arithmetic in proportion to the padded input, which ImageNet's few very large images make dear.

**Padding.**  The images are copied into one tensor the size of the largest, with each image's last row and
column repeated once beyond it: roi_align's bilinear samples reach at most that far, and reading the repeat
there is reading the edge pixel, as ``interpolate`` clamps at an image's border.  Nothing further out is ever
read, so the rest is left uninitialised.  A batch whose padded tensor would exceed :data:`CANVAS_PIXELS` is
split by image size into several calls.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import roi_align
from torchvision.transforms import v2

from nfbench.config import DataConfig
from nfbench.data.sets import DataSource, TransformedFolder
from nfbench.data.source import worker_context
from nfbench.errors import ConfigError

log = logging.getLogger("nfbench")

# torchvision's RandomResizedCrop defaults: the crop's share of the image area, and its aspect ratio w / h.
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
TRIES = 10  # RandomResizedCrop's tries before its centre-crop fallback

# Pixels per channel of one padded tensor (768 MB as float32 RGB): more are split into several roi_align calls.
CANVAS_PIXELS = 64 * 2**20

# The modes decode_jpeg(mode=RGB) turns into PIL's convert("RGB") pixels; PIL decodes the others (CMYK).
JPEG_MODES = ("L", "RGB")


# --- Crop boxes -----------------------------------------------------------------------------------------------


def random_resized_crop_boxes(
    height: np.ndarray,
    width: np.ndarray,
    rng: np.random.Generator,
    scale: Sequence[float] = SCALE,
    ratio: Sequence[float] = RATIO,
    tries: int = TRIES,
) -> np.ndarray:
    """Crop boxes (top, left, h, w), int64 (n, 4), for images of ``height`` x ``width`` (n each), drawn as
    torchvision's ``RandomResizedCrop.get_params`` draws them, all at once: for each image ``tries`` candidates
    of area ``U(scale) * H * W`` and aspect ratio ``exp(U(log ratio))``, rounded to whole pixels; the first that
    fits is placed uniformly at random, and where none fits the image is centre-cropped to the nearest ratio in
    range (the whole image when its own ratio is in range).  torchvision stops at the first candidate that fits;
    drawing the later ones too changes which numbers are drawn, not their distribution.  NumPy rather than
    torch: a worker draws one image's box at a time, where each torch call costs ten times as much."""
    h_img, w_img = np.asarray(height, dtype=np.float64), np.asarray(width, dtype=np.float64)
    n = len(h_img)
    target = (h_img * w_img)[:, None] * rng.uniform(scale[0], scale[1], size=(n, tries))
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), size=(n, tries)))
    w = np.round(np.sqrt(target * aspect))  # half to even, as Python's round()
    h = np.round(np.sqrt(target / aspect))
    fits = (w > 0) & (w <= w_img[:, None]) & (h > 0) & (h <= h_img[:, None])
    rows, first = np.arange(n), fits.argmax(axis=1)
    h, w = h[rows, first], w[rows, first]
    place = rng.random(size=(n, 2))
    top, left = np.floor(place[:, 0] * (h_img - h + 1)), np.floor(place[:, 1] * (w_img - w + 1))
    # None fits: the largest centred crop of the nearest ratio in range.
    in_ratio, lo, hi = w_img / h_img, min(ratio), max(ratio)
    fw = np.where(in_ratio > hi, np.round(h_img * hi), w_img)
    fh = np.where(in_ratio < lo, np.round(w_img / lo), h_img)
    found = np.asarray(fits.any(axis=1))
    boxes = np.where(
        found[:, None],
        np.stack([top, left, h, w], axis=1),
        np.stack([(h_img - fh) // 2, (w_img - fw) // 2, fh, fw], axis=1),
    )
    return boxes.astype(np.int64)


def resize_then_centre_crop_box(height: int, width: int, size: int, resize: int) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1), in the image's pixels, that ``Resize(resize)`` then ``CenterCrop(size)`` keep:
    torchvision's output size (the shorter side to ``resize``, the longer ``int(resize * long / short)``) and its
    centre crop's corner (``int(round((side - size) / 2))``), mapped back by the resize's scale (in / out, as
    ``interpolate`` maps output pixels)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    sy, sx = height / new_h, width / new_w
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def _upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without waiting for the work queued there: on CUDA through pinned memory,
    asynchronously (a plain copy waits for the stream to drain, the training step queued before it included)."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def _canvas(images: Sequence[torch.Tensor], fill: Optional[float] = None) -> torch.Tensor:
    """``images`` (each (3, h, w), any dtype) in one float32 (n, 3, H + 1, W + 1) tensor, top-left aligned, each
    with its last row and then its last column repeated once beyond it.  What lies further out is left as
    ``torch.empty`` gives it (``fill``: set to that value, for tests that show it is never read)."""
    sizes = [img.shape[-2:] for img in images]
    device = images[0].device
    canvas = torch.empty(
        len(images), 3, max(h for h, _ in sizes) + 1, max(w for _, w in sizes) + 1, dtype=torch.float32, device=device
    )
    if fill is not None:
        canvas.fill_(fill)
    for i, img in enumerate(images):
        canvas[i, :, : img.shape[-2], : img.shape[-1]].copy_(img)
    n = torch.arange(len(images), device=device)
    hs, ws = _upload(torch.tensor(sizes, dtype=torch.int64), device).unbind(1)
    canvas[n, :, hs] = canvas[n, :, hs - 1]  # rows first, so the column copy repeats the corner too
    canvas[n, :, :, ws] = canvas[n, :, :, ws - 1]
    return canvas


def _groups(sizes: Sequence[tuple[int, int]], budget: int) -> list[list[int]]:
    """The batch's indices split, in order of image area, into groups whose padded tensor stays within
    ``budget`` pixels per channel (a group of one image may exceed it); each group in the batch's order."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1])
    groups: list[list[int]] = []
    h = w = 0
    for i in order:
        nh, nw = max(h, sizes[i][0] + 1), max(w, sizes[i][1] + 1)
        if groups and (len(groups[-1]) + 1) * nh * nw <= budget:
            groups[-1].append(i)
            h, w = nh, nw
        else:
            groups.append([i])
            h, w = sizes[i][0] + 1, sizes[i][1] + 1
    return [sorted(group) for group in groups]


def resized_crops(
    images: Sequence[torch.Tensor],
    boxes: torch.Tensor,
    size: int,
    budget: int = CANVAS_PIXELS,
    fill: Optional[float] = None,
) -> torch.Tensor:
    """Each image's box (x0, y0, x1, y1) in its own pixels (``boxes``: a host tensor), resized to ``size`` x
    ``size``: float32 (n, 3, size, size) on the images' device, values on the images' scale (0-255 for uint8
    images).  One roi_align per group of :func:`_groups` (one for a batch of ImageNet-sized photographs)."""
    device = images[0].device
    out = torch.empty(len(images), 3, size, size, dtype=torch.float32, device=device)
    boxes = boxes.to(torch.float32)
    for group in _groups([(int(img.shape[-2]), int(img.shape[-1])) for img in images], budget):
        canvas = _canvas([images[i] for i in group], fill)
        rois = torch.cat([torch.arange(len(group), dtype=torch.float32)[:, None], boxes[group]], dim=1)
        crops = roi_align(
            canvas, _upload(rois, device), output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
        )
        if len(group) == len(images):
            return crops
        out[_upload(torch.tensor(group), device)] = crops
    return out


# --- Workers: bytes, headers, boxes ---------------------------------------------------------------------------


@dataclass
class EncodedBatch:
    """A batch as the workers send it: one byte buffer holding each sample's JPEG bytes, or, where PIL decoded
    it in the worker (``reasons[i]`` says why), its (3, h, w) uint8 pixels; ``offsets`` (n + 1) delimit them."""

    buffer: torch.Tensor  # uint8
    offsets: list[int]
    sizes: list[tuple[int, int]]  # (h, w) from each file's header
    reasons: list[Optional[str]]  # None: JPEG bytes for decode_jpeg; else why PIL decoded it in the worker
    boxes: torch.Tensor  # (n, 4) float64: x0, y0, x1, y1 in the image's pixels
    flip: torch.Tensor  # (n,) bool
    labels: torch.Tensor  # (n,) int64
    index: list[int]  # each sample's index in its data set (to name its file)

    def piece(self, i: int) -> torch.Tensor:
        data = self.buffer[self.offsets[i] : self.offsets[i + 1]]
        return data if self.reasons[i] is None else data.view(3, *self.sizes[i])


def read_encoded(path: str) -> tuple[torch.Tensor, tuple[int, int], Optional[str]]:
    """A file as the batched decode takes it: its bytes when decode_jpeg reads it as PIL's ``convert("RGB")``
    would, else its pixels decoded by PIL and the reason; with its (h, w) from the header."""
    with open(path, "rb") as f:
        raw = f.read()
    with Image.open(io.BytesIO(raw)) as img:
        size = (img.height, img.width)
        if img.format == "JPEG" and img.mode in JPEG_MODES:
            return torch.frombuffer(bytearray(raw), dtype=torch.uint8), size, None
        reason = f"a {img.mode} JPEG" if img.format == "JPEG" else f"a {img.format} file"
        return v2.functional.pil_to_tensor(img.convert("RGB")).reshape(-1), size, reason


class EncodedImages(Dataset):
    """Item ``(i, seed)`` (training: the seed draws the crop box and flip) or ``i`` (evaluation: Resize + CenterCrop's
    box): sample i's bytes (or pixels), size, box, flip and label, for :func:`collate`."""

    def __init__(self, samples: Sequence[tuple[str, int]], size: int, train: bool, hflip: bool) -> None:
        self.samples, self.size, self.train, self.hflip = list(samples), size, train, hflip
        self.resize = int(round(size / 0.875))  # as nfbench.data.transforms: 256 for 224

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        i, seed = key if self.train else (key, None)
        path, label = self.samples[i]
        data, (h, w), reason = read_encoded(path)
        flip = False
        if self.train:
            rng = np.random.default_rng(seed)
            top, left, ch, cw = random_resized_crop_boxes(np.array([h]), np.array([w]), rng)[0].tolist()
            box = (left, top, left + cw, top + ch)
            flip = self.hflip and bool(rng.random() < 0.5)
        else:
            box = resize_then_centre_crop_box(h, w, self.size, self.resize)
        return data, (h, w), reason, box, flip, label, i


def collate(items: list) -> EncodedBatch:
    data, sizes, reasons, boxes, flips, labels, index = zip(*items)
    offsets = [0]
    for d in data:
        offsets.append(offsets[-1] + len(d))
    return EncodedBatch(
        torch.cat(data),
        offsets,
        list(sizes),
        list(reasons),
        torch.tensor(boxes, dtype=torch.float64),
        torch.tensor(flips, dtype=torch.bool),
        torch.tensor(labels, dtype=torch.int64),
        list(index),
    )


# --- The training device: decode, crop, flip, normalise -------------------------------------------------------


def decode_batch(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """decode_jpeg on a list of JPEG byte tensors, on ``device``, as RGB (3, h, w) uint8."""
    with warnings.catch_warnings():  # torchvision 0.29 announces the move of its decoders to TorchCodec
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision")
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


class BatchDecoder:
    """An :class:`EncodedBatch` to the batch the model trains on: float32 (n, 3, size, size) normalised by
    (x / 255 - mean) / std, and int64 labels, on ``device``.  ``samples`` (path, label) name the files in log lines."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        samples: Optional[Sequence[tuple[str, int]]] = None,
    ) -> None:
        self.size, self.device, self.samples = size, device, samples
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = (1.0 / (255.0 * std_t)).to(device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t).to(device)
        self.told: set[int] = set()

    def _name(self, index: int) -> str:
        return self.samples[index][0] if self.samples is not None else f"sample {index}"

    def images(self, batch: EncodedBatch) -> list[torch.Tensor]:
        """Every sample's (3, h, w) uint8 pixels on the device."""
        n = len(batch.sizes)
        out: list[Optional[torch.Tensor]] = [None] * n
        jpegs = [i for i in range(n) if batch.reasons[i] is None]
        for i in range(n):
            if batch.reasons[i] is not None:
                out[i] = _upload(batch.piece(i), self.device)
                self._tell(
                    batch.index[i],
                    f"is {batch.reasons[i]}, which decode_jpeg does not read as PIL does: "
                    "decoded by PIL in its DataLoader worker",
                )
        if jpegs:
            try:
                decoded = decode_batch([batch.piece(i) for i in jpegs], self.device)
            except RuntimeError:  # one refused image fails the whole call: each alone, PIL for those refused
                decoded = [self._one(batch, i) for i in jpegs]
            for i, img in zip(jpegs, decoded):
                out[i] = img
        return out  # type: ignore[return-value]

    def _one(self, batch: EncodedBatch, i: int) -> torch.Tensor:
        try:
            return decode_batch([batch.piece(i)], self.device)[0]
        except RuntimeError as e:
            self._tell(
                batch.index[i],
                f"was refused by decode_jpeg ({' '.join(str(e).split())[-120:]}): decoded by PIL",
                warn=True,
            )
            with Image.open(io.BytesIO(batch.piece(i).numpy().tobytes())) as img:
                return _upload(v2.functional.pil_to_tensor(img.convert("RGB")), self.device)

    def _tell(self, index: int, what: str, warn: bool = False) -> None:
        """One log line per file and run."""
        if index not in self.told:
            self.told.add(index)
            (log.warning if warn else log.info)("data.decode=gpu: %s %s", self._name(index), what)

    def __call__(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        x = resized_crops(self.images(batch), batch.boxes, self.size)
        if bool(batch.flip.any()):  # a host tensor: no wait on the device
            x = torch.where(_upload(batch.flip, self.device).view(-1, 1, 1, 1), x.flip(-1), x)
        return torch.addcmul(self.shift, x, self.scale), _upload(batch.labels, self.device)


class DecodedLoader:
    """Batches of a DataLoader of :class:`EncodedImages`, decoded by a :class:`BatchDecoder`: what the training
    loop and evaluation iterate, with the DataLoader's ``sampler`` and length."""

    def __init__(self, loader: DataLoader, decoder: BatchDecoder) -> None:
        self.loader, self.decoder, self.sampler = loader, decoder, loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            yield self.decoder(batch)


# --- The choice and the loaders -------------------------------------------------------------------------------


def folder_samples(ds: Dataset) -> Optional[list[tuple[str, int]]]:
    """The (path, label) of every sample of an image folder as ``build_source`` made it (transformed, held-out
    or subset), in its order; None for a data set that does not read files."""
    if isinstance(ds, TransformedFolder):
        ds = ds.base
    indices: Optional[list[int]] = None
    while isinstance(ds, Subset):
        indices = list(ds.indices) if indices is None else [ds.indices[j] for j in indices]
        ds = ds.dataset
    samples = getattr(ds, "samples", None)
    if samples is None:
        return None
    return list(samples) if indices is None else [samples[j] for j in indices]


def decode_choice(cfg: DataConfig, src: DataSource, device: torch.device) -> Optional[str]:
    """Where this run decodes its images: "gpu" (this module, on ``device``) or "cpu" (PIL in DataLoader
    workers); None for data sets this key does not apply to (anything but ImageNet-recipe files).  auto is gpu
    on CUDA, unless RandAugment is on (the cpu path alone has it)."""
    applies = src.recipe == "imagenet" and folder_samples(src.train) is not None
    if not applies:
        if cfg.decode == "gpu":
            raise ConfigError(
                f"data.decode=gpu is not allowed for data={cfg.name}: the batched decode reads the "
                "JPEG files of the ImageNet recipe (data=imagenet); use data.decode=auto or cpu"
            )
        return None
    if cfg.decode == "auto":
        return "gpu" if device.type == "cuda" and not cfg.randaugment else "cpu"
    return str(cfg.decode)


def _loader(
    ds: EncodedImages, batch_size: int, sampler: Sampler | Sequence[int], drop_last: bool, num_workers: int
) -> DataLoader:
    # Not pinned: decode_jpeg reads the bytes on the host (nvJPEG copies them itself).
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        multiprocessing_context=worker_context() if num_workers > 0 else None,
    )


def train_loader(
    cfg: DataConfig, src: DataSource, sampler: Sampler, batch_size: int, drop_last: bool, device: torch.device
) -> Iterable:
    """The training batches, in ``sampler``'s order (a :class:`nfbench.data.loaders.SeededSampler`)."""
    samples = folder_samples(src.train)
    ds = EncodedImages(samples, src.image_size, train=True, hflip=cfg.hflip)  # type: ignore[arg-type]
    return DecodedLoader(
        _loader(ds, batch_size, sampler, drop_last, cfg.num_workers),
        BatchDecoder(src.image_size, src.mean, src.std, device, samples),
    )


def eval_loader(cfg: DataConfig, src: DataSource, ds: Dataset, shard: Sequence[int], device: torch.device) -> Iterable:
    """The evaluation batches of ``ds`` (test set or validation split), this rank's ``shard`` of it, in order."""
    samples = folder_samples(ds)
    encoded = EncodedImages(samples, src.image_size, train=False, hflip=False)  # type: ignore[arg-type]
    return DecodedLoader(
        _loader(encoded, cfg.test_batch_size, list(shard), False, cfg.num_workers),
        BatchDecoder(src.image_size, src.mean, src.std, device, samples),
    )
