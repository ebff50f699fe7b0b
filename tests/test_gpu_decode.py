"""data.decode=gpu (issue 26, item 2; nfbench/data/gpu_decode.py): JPEG bytes from the workers, decoded, cropped,
resized, flipped and normalised a batch at a time on the training device (here the CPU; the ``gpu`` tests run
the same on CUDA).  Measured on the 120 real ImageNet photographs of ../shared/data/imagenet-sample-120.tar.gz:

- decode: torchvision's batched decode_jpeg equals PIL's ``convert("RGB")`` on all 120 (grey ones included) and
  on a CMYK JPEG made from one: max and mean |difference| 0 (torchvision 0.29.1 and Pillow 13.0 both decode
  with libjpeg-turbo).  nvJPEG on CUDA is another decoder: its figures come from the ``gpu`` test below;
- crop boxes: the sampler's boxes against ``v2.RandomResizedCrop.get_params`` (10,000 draws each, six image
  shapes from 375x500 to the fallback-only 64x2000): two-sample Kolmogorov-Smirnov p > 0.001 on top, left, h,
  w, area share and aspect ratio, and the fallback's share within 4 standard errors; the test prints them;
- resize: roi_align against torchvision's antialiased bilinear resize of the CPU path (uint8): one crop per
  photograph (seed 0), max 45.6 and mean 0.64 grey levels; evaluation's Resize 256 + CenterCrop 224, max 53.5,
  mean 0.71.  Plain bilinear sampling (a batched grid_sample) would give max 137, mean 1.36 and max 136, mean
  2.00.  Where a crop is enlarged, roi_align is torchvision's interpolation: inside a 2-pixel border, within
  0.01 of torchvision's float result; at the border it blends in the pixels just outside the box, which
  torchvision (cropping before it resizes) never sees.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torch.utils.data import DataLoader
from torchvision import datasets as tvd
from torchvision.transforms import v2

from nfbench import rundir
from nfbench.config import Decode
from nfbench.data import gpu_decode as gd
from nfbench.data.loaders import SeededSampler, SeededSamples, build_loaders
from nfbench.data.sets import IMAGENET_MEAN, IMAGENET_STD
from nfbench.data.source import build_source
from nfbench.engine.loop import train
from nfbench.errors import ConfigError
from tests.test_data import Killed, assert_stopped_runs_resume_exactly, die_after_saving
from tests.test_imagenet import imagenet_tree

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pil_rgb(data: bytes | Path) -> torch.Tensor:
    """What torchvision's ImageFolder gives: PIL's convert("RGB"), as uint8 (3, H, W)."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        return v2.functional.pil_to_tensor(img.convert("RGB"))


def encoded(path: Path) -> torch.Tensor:
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)


def cmyk_bytes(path: Path) -> bytes:
    out = io.BytesIO()
    with Image.open(path) as img:
        img.convert("CMYK").save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(imagenet_sample) -> list[torch.Tensor]:
    return [pil_rgb(p) for p in imagenet_sample]


@pytest.fixture(scope="module")
def tree(imagenet_sample, tmp_path_factory) -> Path:
    return imagenet_tree(imagenet_sample, tmp_path_factory.mktemp("imagenet-tree"))


def differences(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.float() - b.float()).abs()
    return float(d.max()), float(d.mean())


# --- Decoding ---------------------------------------------------------------------------------------------------


def decode_against_pil(files: list[Path], device: torch.device) -> tuple[float, float, float]:
    """(max, mean |difference|, the grey images' max) of decode_jpeg on ``device`` against PIL, over ``files``."""
    decoded = gd.decode_batch([encoded(p) for p in files], device)
    worst, total, grey_worst, pixels = 0.0, 0.0, 0.0, 0
    for path, img in zip(files, decoded):
        ref = pil_rgb(path)
        assert img.shape == ref.shape and img.dtype == torch.uint8, path
        d = (img.cpu().float() - ref.float()).abs()
        worst, total, pixels = max(worst, float(d.max())), total + float(d.sum()), pixels + d.numel()
        if Image.open(path).mode == "L":
            grey_worst = max(grey_worst, float(d.max()))
            assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2]), path  # grey: three equal channels
    return worst, total / pixels, grey_worst


def test_batched_decode_equals_pil_on_the_120_photographs(imagenet_sample):
    """Measured here: max 0, mean 0 on all 120 (the 23 grey ones included): both are libjpeg-turbo."""
    worst, mean, grey = decode_against_pil(imagenet_sample, torch.device("cpu"))
    print(f"decode_jpeg (cpu) vs PIL on 120 photographs: max {worst:g}, mean {mean:.4f}, grey max {grey:g}")
    assert worst == 0 and mean == 0 and grey == 0
    cmyk = cmyk_bytes(imagenet_sample[0])
    one = gd.decode_batch([torch.frombuffer(bytearray(cmyk), dtype=torch.uint8)], torch.device("cpu"))[0]
    assert torch.equal(one, pil_rgb(cmyk))  # libjpeg-turbo reads CMYK too, but nvJPEG need not


@pytest.mark.gpu
@needs_cuda
def test_nvjpeg_decode_against_pil_on_the_120_photographs(imagenet_sample):
    """nvJPEG (another IDCT and chroma upsampling) against PIL: the figures are printed for benchmarks/README.md.
    The bound is provisional, to be set from the first H200 reading: a mean within 2 grey levels."""
    worst, mean, grey = decode_against_pil(imagenet_sample, torch.device("cuda"))
    print(f"decode_jpeg (cuda, nvJPEG) vs PIL on 120 photographs: max {worst:g}, mean {mean:.4f}, grey max {grey:g}")
    assert mean < 2.0


def test_files_decode_jpeg_does_not_read_as_pil_does_are_decoded_by_pil_in_the_worker(imagenet_sample, tmp_path):
    """A PNG under a .JPEG name and a CMYK JPEG travel as PIL's RGB pixels; grey and colour JPEGs as bytes."""
    png, cmyk = tmp_path / "png.JPEG", tmp_path / "cmyk.JPEG"
    with Image.open(imagenet_sample[1]) as img:
        img.save(png, "PNG")
    cmyk.write_bytes(cmyk_bytes(imagenet_sample[2]))
    grey = next(p for p in imagenet_sample if Image.open(p).mode == "L")
    files = [imagenet_sample[0], png, cmyk, grey]
    reasons = [gd.read_encoded(str(p))[2] for p in files]
    assert reasons == [None, "a PNG file", "a CMYK JPEG", None]
    ds = gd.EncodedImages([(str(p), 0) for p in files], 224, train=False, hflip=False)
    batch = gd.collate([ds[i] for i in range(len(files))])
    decoder = gd.BatchDecoder(224, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), ds.samples)
    for path, img in zip(files, decoder.images(batch)):
        assert torch.equal(img, pil_rgb(path)), path
    x, y = decoder(batch)
    assert x.shape == (4, 3, 224, 224) and torch.isfinite(x).all() and y.tolist() == [0] * 4


def test_a_batch_decode_jpeg_refuses_is_decoded_image_by_image(imagenet_sample, monkeypatch, caplog):
    """decode_jpeg returns nothing when one image of the list fails: then each is decoded alone, and the one it
    refuses by PIL, named in a warning."""
    files = imagenet_sample[:3]
    refused = encoded(files[1])
    real = gd.decode_jpeg

    def refuse(data, **kw):
        if any(torch.equal(d, refused) for d in data):
            raise RuntimeError("Not a JPEG file: planted refusal")
        return real(data, **kw)

    monkeypatch.setattr(gd, "decode_jpeg", refuse)
    ds = gd.EncodedImages([(str(p), 0) for p in files], 224, train=False, hflip=False)
    batch = gd.collate([ds[i] for i in range(3)])
    with caplog.at_level(logging.INFO, logger="nfbench"):
        images = gd.BatchDecoder(224, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), ds.samples).images(batch)
    assert all(torch.equal(img, pil_rgb(p)) for img, p in zip(images, files))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(files[1]) in warned[0] and "planted refusal" in warned[0]


# --- Crop boxes -------------------------------------------------------------------------------------------------


def box_features(boxes: np.ndarray, h: int, w: int) -> dict[str, np.ndarray]:
    top, left, ch, cw = boxes.T
    return {"top": top, "left": left, "h": ch, "w": cw, "area": ch * cw / (h * w), "ratio": cw / ch}


def torchvision_boxes(h: int, w: int, n: int, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    image = torch.empty(1, 1, 1).expand(1, h, w)  # get_params reads the size alone
    return np.array([v2.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])


def fallback_box(h: int, w: int) -> tuple[int, int, int, int]:
    r = w / h
    ch, cw = (int(round(w / 0.75)), w) if r < 3 / 4 else (h, int(round(h * 4 / 3))) if r > 4 / 3 else (h, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def compare_boxes(mine: np.ndarray, theirs: np.ndarray, h: int, w: int) -> tuple[float, float]:
    """The smallest KS p-value over the box features, and the fallback shares' difference in standard errors."""
    a, b = box_features(mine, h, w), box_features(theirs, h, w)
    p = min(stats.ks_2samp(a[k], b[k]).pvalue for k in a)
    fb = fallback_box(h, w)
    pa, pb = (np.all(mine == fb, axis=1).mean(), np.all(theirs == fb, axis=1).mean())
    pooled = (pa + pb) / 2
    se = np.sqrt(2 * pooled * (1 - pooled) / len(mine)) or 1.0
    return p, abs(pa - pb) / se


SHAPES = [(375, 500), (500, 375), (132, 150), (100, 1000), (1000, 100), (64, 2000)]
DRAWS = 10_000


@pytest.mark.parametrize("h,w", SHAPES)
def test_crop_boxes_have_the_distribution_of_torchvisions_get_params(h, w):
    """ImageNet's usual shapes, a small one, and extreme aspect ratios, where most (100x1000: 78%) or all
    (64x2000) draws end in the centre-crop fallback."""
    mine = gd.random_resized_crop_boxes(np.full(DRAWS, h), np.full(DRAWS, w), np.random.default_rng(1))
    theirs = torchvision_boxes(h, w, DRAWS, seed=1)
    p, z = compare_boxes(mine, theirs, h, w)
    share = np.all(mine == fallback_box(h, w), axis=1).mean()
    print(
        f"{h}x{w}: min KS p {p:.3f}, fallback share {share:.3f} (|z| {z:.2f}), mean area share "
        f"{box_features(mine, h, w)['area'].mean():.4f} vs {box_features(theirs, h, w)['area'].mean():.4f}"
    )
    assert p > 1e-3 and z < 4
    assert (mine[:, 0] >= 0).all() and (mine[:, 0] + mine[:, 2] <= h).all()
    assert (mine[:, 1] >= 0).all() and (mine[:, 1] + mine[:, 3] <= w).all()


@pytest.mark.parametrize(
    "h,w,wrong",
    [((375), 500, dict(scale=(0.1, 1.0))), (100, 1000, dict(tries=3)), (375, 500, dict(ratio=(0.7, 4 / 3)))],
)
def test_the_box_comparison_catches_a_sampler_a_little_off(h, w, wrong):
    """The comparison has teeth: another scale, fewer tries, another ratio range are each found."""
    mine = gd.random_resized_crop_boxes(np.full(DRAWS, h), np.full(DRAWS, w), np.random.default_rng(2), **wrong)
    p, z = compare_boxes(mine, torchvision_boxes(h, w, DRAWS, seed=2), h, w)
    assert p < 1e-3 or z > 4


# --- Resizing ---------------------------------------------------------------------------------------------------


def crops_both_ways(photos: list[torch.Tensor], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """One training box per photograph: roi_align's crops, torchvision's (uint8, the CPU path), its float ones."""
    rng = np.random.default_rng(seed)
    boxes = [
        gd.random_resized_crop_boxes(np.array(p.shape[1:2]), np.array(p.shape[2:3]), rng)[0].tolist() for p in photos
    ]
    xyxy = torch.tensor([[left, top, left + w, top + h] for top, left, h, w in boxes], dtype=torch.float64)
    mine = gd.resized_crops(photos, xyxy, 224)
    f = v2.functional
    ref = torch.stack([f.resized_crop(p, *b, [224, 224], antialias=True) for p, b in zip(photos, boxes)])
    ref_float = torch.stack([f.resized_crop(p.float(), *b, [224, 224], antialias=True) for p, b in zip(photos, boxes)])
    return mine, ref, ref_float, boxes


def test_roi_align_crops_against_torchvisions_antialiased_resize(photos):
    mine, ref, ref_float, boxes = crops_both_ways(photos, seed=0)
    worst, mean = differences(mine, ref)
    plain = torch.stack(
        [v2.functional.resized_crop(p.float(), *b, [224, 224], antialias=False) for p, b in zip(photos, boxes)]
    )
    plain_worst, plain_mean = differences(plain, ref)
    print(
        f"training crops, roi_align vs torchvision: max {worst:.2f}, mean {mean:.3f}; plain bilinear: max "
        f"{plain_worst:.2f}, mean {plain_mean:.3f}"
    )
    assert worst < 50 and mean < 0.7 and plain_mean > 1.5 * mean
    enlarged = torch.tensor([h <= 224 and w <= 224 for _, _, h, w in boxes])
    assert enlarged.sum() >= 20
    inner, _ = differences(mine[enlarged][..., 2:-2, 2:-2], ref_float[enlarged][..., 2:-2, 2:-2])
    assert inner < 0.02  # enlarging, roi_align is torchvision's bilinear interpolation but at the border
    evaluation = torch.tensor(
        [gd.resize_then_centre_crop_box(p.shape[1], p.shape[2], 224, 256) for p in photos], dtype=torch.float64
    )
    f = v2.functional
    ref_eval = torch.stack([f.center_crop(f.resize(p, 256, antialias=True), 224) for p in photos])
    worst, mean = differences(gd.resized_crops(photos, evaluation, 224), ref_eval)
    print(f"evaluation, roi_align vs Resize 256 + CenterCrop 224: max {worst:.2f}, mean {mean:.3f}")
    assert worst < 60 and mean < 0.8


def test_the_padding_beyond_each_image_is_never_read_and_groups_change_nothing(photos):
    images = photos[:24]
    rng = np.random.default_rng(3)
    boxes = [
        gd.random_resized_crop_boxes(np.array(p.shape[1:2]), np.array(p.shape[2:3]), rng)[0].tolist() for p in images
    ]
    xyxy = torch.tensor([[left, top, left + w, top + h] for top, left, h, w in boxes], dtype=torch.float64)
    zero = gd.resized_crops(images, xyxy, 224, fill=0.0)
    assert torch.equal(gd.resized_crops(images, xyxy, 224, fill=float("nan")), zero)
    assert len(gd._groups([tuple(p.shape[1:]) for p in images], 600_000)) > 2
    assert torch.equal(gd.resized_crops(images, xyxy, 224, budget=600_000, fill=float("nan")), zero)


def test_evaluation_box_is_torchvisions_resize_then_centre_crop():
    """An image of 512 x 640: Resize(256) makes it 256 x 320, CenterCrop(224) keeps rows 16-240 and columns
    48-272, i.e. rows 32-480 and columns 96-544 of the original."""
    assert gd.resize_then_centre_crop_box(512, 640, 224, 256) == (96.0, 32.0, 544.0, 480.0)
    assert gd.resize_then_centre_crop_box(640, 512, 224, 256) == (32.0, 96.0, 480.0, 544.0)


# --- Loaders, seeds, resume -------------------------------------------------------------------------------------


def gpu_run(tree: Path, *extra: str) -> list[str]:
    return [
        "data=imagenet",
        f"data.root={tree}",
        "data.decode=gpu",
        "data.batch_size=10",
        "data.test_batch_size=12",
        "data.num_workers=0",
        "model=resnet18",
        "model.width=4",
        "trainer.epochs=2",
        "trainer.progress=false",
        "logger=none",
        "trainer.deterministic=true",
        "trainer.device=cpu",
        *extra,
    ]


def first_batches(loader, k: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == k:
            break
    return out


def test_boxes_and_flips_are_a_function_of_seed_epoch_and_index(make_cfg, tree):
    """The batches do not depend on the number of workers, repeat for the same epoch and differ for another."""
    batches = {}
    for workers in (0, 2):
        cfg = make_cfg(gpu_run(tree, f"data.num_workers={workers}"))
        src = build_source(cfg.data)
        train_loader, _ = build_loaders(cfg.data, src, seed=0)
        assert isinstance(train_loader, gd.DecodedLoader) and isinstance(train_loader.sampler, SeededSampler)
        for epoch in (0, 1, 0):
            train_loader.sampler.set_epoch(epoch)
            batches.setdefault((workers, epoch), []).append(first_batches(train_loader))
    for key, runs in batches.items():
        for a, b in zip(runs[0], runs[-1]):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), key
    for (x0, y0), (x2, y2) in zip(batches[(0, 0)][0], batches[(2, 0)][0]):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert not torch.equal(batches[(0, 0)][0][0][0], batches[(0, 1)][0][0][0])


def test_training_on_the_batched_decode_resumes_exactly(make_cfg, tmp_path, monkeypatch, tree):
    """Killed after epoch 1 of 2, or 1 step into epoch 2, and resumed == uninterrupted, bit for bit."""
    cfg = gpu_run(tree, "trainer.checkpoint_every_steps=1")
    train(make_cfg(cfg, tmp_path / "full"))
    assert_stopped_runs_resume_exactly(make_cfg, monkeypatch, cfg, tmp_path, mid_epoch_step=1)


def test_the_cpu_path_is_torchvisions_recipe_in_dataloader_workers(make_cfg, tree):
    """data.decode=cpu is the DataLoader path as it was: each sample torchvision's transform of the ImageFolder
    image, drawn from torch's RNG seeded by the sample's (seed, epoch, index) seed."""
    cfg = make_cfg([*gpu_run(tree), "data.decode=cpu"])
    src = build_source(cfg.data)
    train_loader, test_loader = build_loaders(cfg.data, src, seed=0)
    assert isinstance(train_loader, DataLoader) and isinstance(train_loader.dataset, SeededSamples)
    assert isinstance(test_loader, DataLoader)
    folder = tvd.ImageFolder(str(tree / "train"))
    recipe = v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    train_loader.sampler.set_epoch(1)
    keys = list(train_loader.sampler)[:10]
    x, y = next(iter(train_loader))
    for row, (i, seed) in enumerate(keys):
        torch.manual_seed(seed)
        assert torch.equal(x[row], recipe(folder[i][0])) and y[row] == folder[i][1]


def test_decode_auto_is_gpu_on_cuda_alone(make_cfg, tree):
    cfg = make_cfg(["data=imagenet", f"data.root={tree}"])
    assert cfg.data.decode == Decode.auto
    src = build_source(cfg.data)
    assert gd.decode_choice(cfg.data, src, torch.device("cpu")) == "cpu"
    assert gd.decode_choice(cfg.data, src, torch.device("cuda")) == "gpu"  # judged from the device type alone
    randaugment = make_cfg(["data=imagenet", f"data.root={tree}", "data.randaugment=true"])
    assert gd.decode_choice(randaugment.data, src, torch.device("cuda")) == "cpu"
    explicit = make_cfg(["data=imagenet", f"data.root={tree}", "data.decode=gpu"])
    assert gd.decode_choice(explicit.data, src, torch.device("cpu")) == "gpu"
    digits = make_cfg(["data=digits"])
    assert gd.decode_choice(digits.data, build_source(digits.data), torch.device("cuda")) is None


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["data=digits", "data.decode=gpu"], "data.decode=gpu is not allowed for data=digits"),
        (["data=imagenet", "data.decode=gpu", "data.randaugment=true"], "the batched decode has no RandAugment"),
    ],
)
def test_decode_gpu_where_it_cannot_run_is_one_line(make_cfg, overrides, match):
    from nfbench.engine.validation import validate

    cfg = make_cfg(overrides)
    with pytest.raises(ConfigError, match=match) as e:
        validate(cfg)
        build_loaders(cfg.data, build_source(cfg.data), seed=0)
    assert "\n" not in str(e.value)


def test_decode_is_a_closed_set(make_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        make_cfg(["data.decode=nvjpeg"])
    assert "full_key: data.decode" in str(e.value.__cause__) and "expected one of [auto, cpu, gpu]" in str(
        e.value.__cause__
    )


def test_a_resume_on_the_other_decode_path_is_refused(make_cfg, tmp_path, monkeypatch, tree):
    """The checkpoint records the path data.decode resolved to: resuming a gpu-path run with auto (the cpu path on
    this machine) is refused in one line; naming the path it ran on continues it."""
    cfg = gpu_run(tree)
    with monkeypatch.context() as m:
        die_after_saving(m, lambda s: s["epoch"] == 1 and not s["partial"])
        with pytest.raises(Killed):
            train(make_cfg(cfg, tmp_path / "run"))
    assert rundir.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["data"]["decode"] == "gpu"
    with pytest.raises(
        ConfigError,
        match="decoded its images on the gpu path and this run would decode them on the "
        "cpu path.*set data.decode=gpu to continue it",
    ) as e:
        train(make_cfg([*cfg, "data.decode=auto"], tmp_path / "run"))
    assert "\n" not in str(e.value)
    assert train(make_cfg(cfg, tmp_path / "run"))["epochs"] == 2


def test_a_checkpoint_from_before_the_key_decoded_on_the_cpu_path():
    source = Path("run/checkpoints/last.pt")
    data = {"num_classes": 4, "fingerprint": "f"}
    rundir.check_data({"data": dict(data), "epoch": 1}, {**data, "decode": "cpu"}, source)
    with pytest.raises(ConfigError, match="on the cpu path and this run would decode them on the gpu path"):
        rundir.check_data({"data": dict(data), "epoch": 1}, {**data, "decode": "gpu"}, source)


# --- On CUDA ----------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_the_batched_path_on_cuda_against_the_same_path_on_the_cpu(tree):
    """The same EncodedBatch decoded and cropped on CUDA and on the CPU: nvJPEG's pixels and CUDA's roi_align
    against libjpeg-turbo's and the CPU's; the figures are printed, the bound is provisional (mean of the
    normalised batches within 0.05, about 3 grey levels)."""
    samples = tvd.ImageFolder(str(tree / "train")).samples
    ds = gd.EncodedImages(samples, 224, train=True, hflip=True)
    batch = gd.collate([ds[(i, 1000 + i)] for i in range(len(samples))])
    cpu = gd.BatchDecoder(224, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), samples)(batch)
    cuda = gd.BatchDecoder(224, IMAGENET_MEAN, IMAGENET_STD, torch.device("cuda"), samples)(batch)
    worst, mean = differences(cuda[0].cpu(), cpu[0])
    print(f"batched path, cuda vs cpu (normalised units; x 58 for grey levels): max {worst:.3f}, mean {mean:.4f}")
    assert torch.equal(cuda[1].cpu(), cpu[1]) and mean < 0.05


@pytest.mark.gpu
@needs_cuda
def test_a_batch_on_cuda_waits_for_nothing_queued_before_it(tree):
    """Building a batch syncs with no stream (torch's sync check), so it overlaps the training step queued before
    it: every small host tensor goes up through pinned memory, asynchronously."""
    samples = tvd.ImageFolder(str(tree / "train")).samples
    ds = gd.EncodedImages(samples, 224, train=True, hflip=True)
    batch = gd.collate([ds[(i, i)] for i in range(len(samples))])
    decoder = gd.BatchDecoder(224, IMAGENET_MEAN, IMAGENET_STD, torch.device("cuda"), samples)
    decoder(batch)  # nvJPEG's first call sets it up
    torch.cuda.set_sync_debug_mode("error")
    try:
        x, y = decoder(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert x.is_cuda and y.is_cuda and torch.isfinite(x).all()
