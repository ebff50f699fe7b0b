"""Data sets: the CIFAR binary release read from files in torchvision's layout, the missing-data
error, the packaged digits, ImageFolder trees of real CIFAR-10 JPEGs, and the augmentation recipe."""

from __future__ import annotations

import logging
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets as tvd

from nfbench import rundir
from nfbench.data.loaders import build_loaders
from nfbench.data.sets import CIFAR_MEAN, CIFAR_STD, SPLIT_SEED
from nfbench.data.source import build_source
from nfbench.engine.loop import train
from nfbench.errors import DataError, DataNotFoundError
from tests.test_train import Killed, load_weights


def write_cifar(root: Path, hundred: bool, n_per_file: int = 6) -> dict[str, np.ndarray]:
    """Write a small CIFAR release in the exact format torchvision downloads (python pickles, uint8 rows
    of 3072 = 3 planes of 32x32, labels under 'labels' or 'fine_labels'). Returns the arrays written."""
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    files = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    key = "fine_labels" if hundred else "labels"
    written = {}
    for name in files:
        data = rng.integers(0, 256, size=(n_per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, 100 if hundred else 10, size=n_per_file).tolist()
        entry = {"data": data, key: labels, "filenames": [f"{name}_{i}.png" for i in range(n_per_file)]}
        if hundred:
            entry["coarse_labels"] = [y // 5 for y in labels]
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        written[name] = (data, np.array(labels))
    # The release's class names: batches.meta's label_names (CIFAR-10), meta's fine_label_names (CIFAR-100).
    meta, names_key = ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    with open(folder / meta, "wb") as f:
        pickle.dump({names_key: [f"class{k:03d}" for k in range(100 if hundred else 10)]}, f)
    return written


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_binary_release_is_read_pixel_exact(make_cfg, tmp_path, hundred):
    written = write_cifar(tmp_path, hundred)
    name = "cifar100" if hundred else "cifar10"
    cfg = make_cfg([f"data={name}", f"data.root={tmp_path}", "data.download=false"])
    src = build_source(cfg.data)
    train_files = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    x_train = np.concatenate([written[f][0] for f in train_files])
    y_train = np.concatenate([written[f][1] for f in train_files])
    assert len(src.train) == len(x_train) and len(src.test) == 6
    assert src.num_classes == (100 if hundred else 10) and src.in_chans == 3 and src.image_size == 32
    raw = src.train.images  # before augmentation: uint8 (N, 3, 32, 32)
    # Hand layout of a CIFAR row: channel c, row h, column w is at c*1024 + h*32 + w.
    for i, c, h, w in [(0, 0, 0, 0), (3, 1, 5, 7), (len(x_train) - 1, 2, 31, 31)]:
        assert raw[i, c, h, w].item() == x_train[i, c * 1024 + h * 32 + w]
    assert torch.equal(src.train.labels, torch.from_numpy(y_train))
    # The test set is only normalised: image 0, pixel (c, h, w) -> (v/255 - mean_c) / std_c.
    x0, y0 = src.test[0]
    test_data, test_labels = written["test" if hundred else "test_batch"]
    assert y0 == test_labels[0]
    if not hundred:
        expected = (test_data[0, 1024 + 2 * 32 + 3] / 255.0 - CIFAR_MEAN[1]) / CIFAR_STD[1]
        assert x0[1, 2, 3].item() == pytest.approx(expected, abs=1e-5)


def test_missing_cifar_offline_says_where_it_looked_and_how_to_fix(make_cfg, tmp_path):
    cfg = make_cfg(["data=cifar10", f"data.root={tmp_path}", "data.download=false"])
    with pytest.raises(DataNotFoundError) as e:
        build_source(cfg.data)
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data.root" in msg and "NFBENCH_DATA" in msg


def test_failed_download_is_one_clear_error(make_cfg, tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    cfg = make_cfg(["data=cifar100", f"data.root={tmp_path}", "data.download=true"])
    with pytest.raises(DataNotFoundError) as e:
        build_source(cfg.data)
    msg = str(e.value)
    assert "download failed" in msg and "name resolution" in msg and str(tmp_path) in msg


def test_cli_reports_missing_data_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nfbench.cli",
            "train",
            "data=cifar10",
            f"data.root={tmp_path}",
            "data.download=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "nfbench: error: CIFAR10 not found" in proc.stderr and "Traceback" not in proc.stderr


def test_digits_ship_with_the_package(make_cfg):
    src = build_source(make_cfg(["data=digits"]).data)
    # scikit-learn's copy of the UCI digits: 1,797 images of 8x8, 10 classes; our split holds out a fifth.
    assert len(src.train) + len(src.test) == 1797 and len(src.test) == 1797 // 5
    assert (src.num_classes, src.in_chans, src.image_size) == (10, 1, 8)
    labels = torch.cat([src.train.labels, src.test.labels])
    assert torch.bincount(labels).min() >= 170  # every digit is present (174-183 each)


def test_train_augmentation_is_random_and_test_is_deterministic(make_cfg):
    cfg = make_cfg(["data=digits", "data.randaugment=true"])
    src = build_source(cfg.data)
    torch.manual_seed(0)
    a = torch.stack([src.train[0][0] for _ in range(8)])
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 8))
    assert torch.equal(src.test[0][0], src.test[0][0])
    assert src.test[0][0].shape == (1, 8, 8) and src.test[0][0].dtype == torch.float32


def test_loader_order_depends_only_on_seed_and_epoch(make_cfg):
    cfg = make_cfg(["data=digits", "data.batch_size=100"])
    src = build_source(cfg.data)

    def first_labels(seed: int, epoch: int) -> torch.Tensor:
        train, _ = build_loaders(cfg.data, src, seed=seed)
        train.sampler.set_epoch(epoch)
        return next(iter(train))[1]

    assert torch.equal(first_labels(0, 3), first_labels(0, 3))
    assert not torch.equal(first_labels(0, 3), first_labels(0, 4))
    assert not torch.equal(first_labels(0, 3), first_labels(1, 3))


def test_real_cifar10_jpeg_imagefolder(make_cfg, cifar10_jpeg_subset):
    cfg = make_cfg(["data=imagefolder", f"data.root={cifar10_jpeg_subset}", "data.randaugment=true"])
    src = build_source(cfg.data)
    assert (len(src.train), len(src.test), src.num_classes, src.image_size, src.in_chans) == (2000, 1000, 10, 32, 3)
    # Channel means measured on the whole JPEG release: (0.4919, 0.4832, 0.4474) (shared/data/README.md);
    # ours come from a 512-image sample, so they agree to about two decimals.
    assert np.allclose(src.mean, (0.4919, 0.4832, 0.4474), atol=0.02)
    x, y = src.train[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10


def test_cifar_from_images_writes_the_python_release(make_cfg, tmp_path, cifar10_jpeg_subset):
    """scripts/cifar_from_images.py: the JPEG tree becomes batches that data=cifar10 reads, pixel for pixel."""
    from PIL import Image

    script = Path(__file__).resolve().parents[1] / "scripts" / "cifar_from_images.py"
    out = subprocess.run(
        [sys.executable, str(script), str(cifar10_jpeg_subset), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    src = build_source(make_cfg(["data=cifar10", f"data.root={tmp_path}", "data.download=false"]).data)
    assert (len(src.train), len(src.test)) == (2000, 1000)  # the fixture's 200 + 100 images per class
    classes = sorted(p.name for p in (cifar10_jpeg_subset / "test").iterdir())
    # The test batch keeps class order, then file-name order: image 100 * k is class k's first file.
    for k in (0, 3, 9):
        first = sorted((cifar10_jpeg_subset / "test" / classes[k]).iterdir())[0]
        expected = torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(src.test.images[100 * k], expected)
        assert int(src.test.labels[100 * k]) == k
    # Stored in that order throughout: the training batches are consecutive slices of it, not interleaved.
    assert src.train.labels.tolist() == [k for k in range(10) for _ in range(200)]


def test_cifar_from_images_reencode_is_one_more_jpeg_round_trip(tmp_path, cifar10_jpeg_subset):
    """--reencode 50: each image is the file's decode passed once more through JPEG at quality 50, 4:2:0
    (the dose-response check of docs/results-cifar10-gpu.md); the mean change is well above zero."""
    import io
    import pickle

    from PIL import Image

    script = Path(__file__).resolve().parents[1] / "scripts" / "cifar_from_images.py"
    out = subprocess.run(
        [sys.executable, str(script), str(cifar10_jpeg_subset), str(tmp_path), "--reencode", "50"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        pixels = pickle.load(f)["data"]
    first = sorted(
        (cifar10_jpeg_subset / "test" / sorted(p.name for p in (cifar10_jpeg_subset / "test").iterdir())[0]).iterdir()
    )[0]
    decoded = Image.open(first).convert("RGB")
    buf = io.BytesIO()
    decoded.save(buf, format="JPEG", quality=50, subsampling="4:2:0")
    again = np.asarray(Image.open(buf).convert("RGB")).transpose(2, 0, 1).reshape(-1)
    assert np.array_equal(pixels[0], again)
    plain = np.asarray(decoded).transpose(2, 0, 1).reshape(-1).astype(int)
    assert np.abs(pixels[0].astype(int) - plain).mean() > 1.0
    bad = subprocess.run(
        [sys.executable, str(script), str(cifar10_jpeg_subset), str(tmp_path), "--reencode", "100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--reencode" in bad.stderr


def imagefolder_run(root: Path, *extra: str) -> list[str]:
    """A tiny real-JPEG run whose training images are decoded and augmented in two worker processes (the
    DataLoader path: data.on_device=false; held in memory, the folder would take the device loader's)."""
    return [
        "data=imagefolder",
        f"data.root={root}",
        "data.num_workers=2",
        "data.on_device=false",
        "data.train_subset=192",
        "data.test_subset=64",
        "data.batch_size=32",
        "data.randaugment=true",
        "model=resnet20",
        "model.width=4",
        "trainer.epochs=2",
        "trainer.progress=false",
        "trainer.deterministic=true",
        *extra,
    ]


def die_after_saving(monkeypatch, when) -> None:
    """Make the run die (as kill -9 would) right after it wrote a last.pt whose state satisfies ``when``."""
    save = rundir.save_checkpoint

    def save_then_die(path: Path, state: dict) -> None:
        save(path, state)
        if path.name == rundir.LAST and when(state):
            raise Killed

    monkeypatch.setattr(rundir, "save_checkpoint", save_then_die)


def test_imagefolder_with_workers_resumes_exactly(make_cfg, tmp_path, monkeypatch, cifar10_jpeg_subset):
    """Two epochs straight == killed after epoch 1 (or 2 steps into epoch 2) and resumed, bit for bit,
    with the augmentation drawn in persistent DataLoader workers."""
    cfg = imagefolder_run(cifar10_jpeg_subset, "trainer.checkpoint_every_steps=2")
    train(make_cfg(cfg, tmp_path / "full"))
    assert_stopped_runs_resume_exactly(make_cfg, monkeypatch, cfg, tmp_path, mid_epoch_step=2)


def assert_stopped_runs_resume_exactly(
    make_cfg, monkeypatch, cfg: list[str], tmp_path: Path, mid_epoch_step: int
) -> None:
    """Runs of ``cfg`` killed after epoch 1, or ``mid_epoch_step`` steps into epoch 2, then resumed, end
    with exactly the weights of the uninterrupted run already in ``tmp_path / "full"``."""
    full = load_weights(tmp_path / "full")
    stops = {
        "epoch": lambda s: s["epoch"] == 1 and not s["partial"],
        "mid-epoch": lambda s: s["epoch"] == 1 and s["partial"] and s["partial"]["batches_done"] == mid_epoch_step,
    }
    for name, when in stops.items():
        with monkeypatch.context() as m:
            die_after_saving(m, when)
            with pytest.raises(Killed):
                train(make_cfg(cfg, tmp_path / name))
        train(make_cfg(cfg, tmp_path / name))
        resumed = load_weights(tmp_path / name)
        assert all(torch.equal(full[k], resumed[k]) for k in full), name


def damaged_copy(src: Path, dst: Path) -> tuple[Path, Path]:
    """A copy of the real-JPEG tree with one training image truncated to half its bytes, outside the
    512-image normalisation sample, and one test image emptied. Returns (truncated, emptied)."""
    shutil.copytree(src, dst)
    train_files = sorted(tvd.ImageFolder(str(dst / "train")).samples)
    order = torch.randperm(len(train_files), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    truncated = Path(train_files[order[550]][0])  # inside data.train_subset=600, outside the first 512
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    emptied = Path(sorted(tvd.ImageFolder(str(dst / "test")).samples)[5][0])
    emptied.write_bytes(b"")
    return truncated, emptied


DAMAGED_RUN = [
    "data=imagefolder",
    "data.num_workers=0",
    "data.train_subset=600",
    "data.batch_size=100",
    "model=resnet20",
    "model.width=4",
    "trainer.epochs=1",
    "trainer.progress=false",
]


def test_damaged_images_are_named_before_any_training_step(make_cfg, tmp_path, cifar10_jpeg_subset):
    truncated, emptied = damaged_copy(cifar10_jpeg_subset, tmp_path / "data")
    cfg = make_cfg([*DAMAGED_RUN, f"data.root={tmp_path / 'data'}"], tmp_path / "run")
    with pytest.raises(DataError) as e:
        train(cfg)
    msg = str(e.value)
    assert str(truncated) in msg and "data.skip_corrupt=true" in msg and "\n" not in msg
    assert not (tmp_path / "run" / "checkpoints").exists()
    truncated.unlink()  # the next damaged file is the test set's empty one
    with pytest.raises(DataError, match=f"{emptied}.*empty"):
        train(cfg)


def test_skip_corrupt_trains_without_the_damaged_images_and_counts_them(
    make_cfg, tmp_path, cifar10_jpeg_subset, caplog
):
    damaged_copy(cifar10_jpeg_subset, tmp_path / "data")
    cfg = make_cfg([*DAMAGED_RUN, f"data.root={tmp_path / 'data'}", "data.skip_corrupt=true"], tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="nfbench"):
        src = build_source(cfg.data)
        result = train(cfg)
    assert (len(src.train), len(src.test)) == (600, 999)  # 1,999 readable training images, subset 600
    assert result["status"] == "finished"
    skipped = {r.getMessage() for r in caplog.records if "skipped" in r.getMessage()}
    for split in ("train", "test"):
        assert any(f"skipped 1 unreadable image file(s) of {tmp_path / 'data' / split} " in m for m in skipped), skipped


def test_a_file_that_is_no_image_is_named_even_inside_the_normalisation_sample(make_cfg, tmp_path, cifar10_jpeg_subset):
    shutil.copytree(cifar10_jpeg_subset, tmp_path / "data")
    first = Path(sorted(tvd.ImageFolder(str(tmp_path / "data" / "train")).samples)[0][0])
    first.write_bytes(b"<html>404 Not Found</html>")
    cfg = make_cfg([*DAMAGED_RUN, f"data.root={tmp_path / 'data'}"])
    with pytest.raises(DataError, match=str(first)):
        build_source(cfg.data)


def damage_cifar(root: Path, how: str) -> Path:
    write_cifar(root, hundred=False)
    path = root / "cifar-10-batches-py" / "data_batch_3"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        with open(path, "wb") as f:
            pickle.dump({"batch_label": "not cifar", "pixels": np.zeros((6, 3072), np.uint8)}, f)
    return path


@pytest.mark.parametrize("how", ["truncated", "wrong-keys"])
def test_damaged_cifar_batch_is_named(make_cfg, tmp_path, how):
    path = damage_cifar(tmp_path, how)
    cfg = make_cfg(["data=cifar10", f"data.root={tmp_path}", "data.download=false"])
    with pytest.raises(DataError) as e:
        build_source(cfg.data)
    msg = str(e.value)
    assert str(path) in msg and "data.download=true" in msg and "\n" not in msg
    if how == "wrong-keys":
        assert "'data'" in msg and "'labels'" in msg


def test_cli_reports_a_damaged_cifar_batch_in_one_line(tmp_path):
    path = damage_cifar(tmp_path, "truncated")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nfbench.cli",
            "train",
            "data=cifar10",
            f"data.root={tmp_path}",
            "data.download=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"nfbench: error: {path}" in proc.stderr and "Traceback" not in proc.stderr


# -- validation split (data.val_size) --------------------------------------------------------------------------


def root_indices(ds) -> list[int]:
    """The indices into the data set's own training images behind ``ds`` (Subsets unwrapped)."""
    from torch.utils.data import Subset

    from nfbench.data.sets import TransformedFolder

    ds = ds.base if isinstance(ds, TransformedFolder) else ds
    idx = None
    while isinstance(ds, Subset):
        idx = list(ds.indices) if idx is None else [ds.indices[i] for i in idx]
        ds = ds.dataset
    return idx


def test_validation_split_is_disjoint_fixed_and_seen_without_augmentation(make_cfg):
    """data.val_size=0.1 of digits' 1,438 training images: 144 held out (0.1 * 1438 = 143.8, rounded), the other
    1,294 trained on; the same images whatever the run's seed and the global RNGs; taken before data.train_subset."""
    from nfbench.data.sets import DATASETS
    from nfbench.data.transforms import transforms

    splits = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        np.random.seed(seed)
        cfg = make_cfg(["data=digits", "data.val_size=0.1", f"seed={seed}"])
        src = build_source(cfg.data)
        assert (len(src.train), len(src.val), len(src.test)) == (1294, 144, 359)
        train_idx, val_idx = root_indices(src.train), root_indices(src.val)
        assert not set(train_idx) & set(val_idx) and sorted(train_idx + val_idx) == list(range(1438))
        splits.append(val_idx)
    assert splits[0] == splits[1]
    # The validation images get the test transform: normalised only, no crop or flip.
    raw = DATASETS.get("digits").load(cfg.data).train
    normalise = transforms(cfg.data, src, train=False)
    for i in (0, 77, 143):
        assert torch.equal(src.val[i][0], normalise(raw.images[splits[0][i]]))
        assert src.val[i][1] == int(raw.labels[splits[0][i]])
    # data.train_subset then subsets the images that remain: the hold-out is the same.
    sub = build_source(make_cfg(["data=digits", "data.val_size=0.1", "data.train_subset=256"]).data)
    assert len(sub.train) == 256 and root_indices(sub.val) == splits[0]
    assert not set(root_indices(sub.train)) & set(splits[0])
    assert build_source(make_cfg(["data=digits"]).data).val is None


@pytest.mark.parametrize("val_size, per_class", [(0.1, [5, 3, 2]), (20, [9, 7, 4])])
def test_validation_split_is_stratified(val_size, per_class):
    """Classes of 47, 33 and 20 images: 10% is 4.7, 3.3, 2.0 images; the largest remainder gets the tenth
    image: 5, 3, 2.  20 images: 9.4, 6.6, 4.0 -> 9, 7, 4."""
    from nfbench.data.sets import TensorImages
    from nfbench.data.source import split_validation

    labels = torch.tensor([0] * 47 + [1] * 33 + [2] * 20)
    images = torch.zeros(100, 1, 2, 2, dtype=torch.uint8)
    train_ds, val_ds = split_validation(TensorImages(images, labels), val_size, "toy")
    assert torch.bincount(labels[val_ds.indices]).tolist() == per_class
    assert sorted([*train_ds.indices, *val_ds.indices]) == list(range(100))


@pytest.mark.parametrize("on_device", ["false", "auto"], ids=["files", "in-memory"])
def test_image_folder_validation_split_is_stratified(make_cfg, cifar10_jpeg_subset, on_device):
    """An ImageFolder's labels come from its file list (.targets), or from the tensor it was decoded into:
    200 images a class, 10% -> 20 a class."""
    src = build_source(
        make_cfg(
            ["data=imagefolder", f"data.root={cifar10_jpeg_subset}", "data.val_size=0.1", f"data.on_device={on_device}"]
        ).data
    )
    assert src.pil == (on_device == "false") and (len(src.train), len(src.val)) == (1800, 200)
    assert torch.bincount(torch.tensor([src.val[i][1] for i in range(200)])).tolist() == [20] * 10


@pytest.mark.parametrize("value", ["0", "-3", "1.0", "1.5", "true", "abc"])
def test_impossible_val_size_is_refused_before_loading(make_cfg, value):
    from nfbench.engine.validation import validate
    from nfbench.errors import ConfigError

    with pytest.raises(ConfigError, match="data.val_size"):
        validate(make_cfg([f"data.val_size={value}"]))


@pytest.mark.parametrize(
    "value, why",
    [
        ("1438", "leaving none"),
        ("5000", "leaving none"),
        ("0.9999", "leaving none"),
        ("0.0001", "holds out no image"),
        ("5", "classes"),
    ],
)
def test_val_size_the_data_cannot_give_is_one_line(make_cfg, value, why):
    from nfbench.errors import ConfigError

    with pytest.raises(ConfigError, match=why) as e:
        build_source(make_cfg(["data=digits", f"data.val_size={value}"]).data)
    assert "data.val_size" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["imagefolder", "imagenet"])
def test_missing_image_folder_does_not_suggest_a_download(make_cfg, tmp_path, name):
    """data.download fetches CIFAR only: the fix for a missing image folder is data.root."""
    cfg = make_cfg([f"data={name}", f"data.root={tmp_path}", "data.download=true"])
    with pytest.raises(DataNotFoundError) as e:
        build_source(cfg.data)
    msg = str(e.value)
    assert str(tmp_path) in msg and "data.root" in msg and "download" not in msg
